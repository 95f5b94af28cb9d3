import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A memory figure of a running process from /proc: VmRSS (now) or VmHWM (its peak), in MB. */
export function memoryMb (pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const kb = Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
  return Math.round(kb / 1024)
}

/** A new SQLite file of one run's own: its DATABASE_URL, and `remove`, which deletes it. */
export function tempDatabase (): { url: string, remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'orders-bench-'))
  return { url: `sqlite:${join(dir, 'orders.db')}`, remove: () => rmSync(dir, { recursive: true, force: true }) }
}
