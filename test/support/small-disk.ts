import { execFileSync } from 'node:child_process'
import { closeSync, openSync, writeSync } from 'node:fs'
import type { Test } from 'tap'
import { tempDir } from '../helper.ts'

/** Mounting a file system of a test's own needs root; elsewhere the tests that need one skip. */
export const SKIP_UNLESS_ROOT = process.getuid?.() !== 0 && 'mounting a small disk needs root: run as root to test a full disk'

/** A 4 MiB tmpfs of the test's own, unmounted and removed when the test ends. */
export function smallDisk (t: Test): string {
  const dir = tempDir(t)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir])
  t.teardown(() => { execFileSync('umount', ['-l', dir]) })
  return dir
}

/** Writes zeros until the file system has no room left. */
export function fillUp (path: string): void {
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(64 * 1024)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
}
