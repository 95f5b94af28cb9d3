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

/** Clock ticks per second of /proc's CPU times (getconf CLK_TCK: 100 on Linux). */
const TICKS_PER_SECOND = 100

/** utime + stime of a process, in ms; 0 once it is gone. */
export function cpuMs (pid: number): number {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return 0
  }
  // Fields after the command's closing parenthesis (the command may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 1000 / TICKS_PER_SECOND
}
