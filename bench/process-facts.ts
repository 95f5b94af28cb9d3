import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A memory figure of a running process from /proc: VmRSS (now) or VmHWM (its peak), in MB. */
export function memoryMb (pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const kb = Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
  return Math.round(kb / 1024)
}

/** A DATABASE_URL for a new SQLite file of one run's own. */
export function tempDatabase (): string {
  return `sqlite:${join(mkdtempSync(join(tmpdir(), 'orders-bench-')), 'orders.db')}`
}
