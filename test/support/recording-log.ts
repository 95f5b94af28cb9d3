import type { StoreLog } from '../../src/store/store-log.ts'

export interface LogEntry { level: 'warn' | 'info', details: object, message: string }

/** A store log that keeps what it is told, for a test to read. */
export function recordingLog (): StoreLog & { entries: LogEntry[] } {
  const entries: LogEntry[] = []
  return {
    entries,
    warn (details, message) { entries.push({ level: 'warn', details, message }) },
    info (details, message) { entries.push({ level: 'info', details, message }) }
  }
}
