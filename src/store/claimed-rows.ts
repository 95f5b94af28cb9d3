import type { ChangedRow, ChangeLog } from './change-log.ts'
import type { StatsDelta } from './stats-delta.ts'
import type { Claim } from './order-store.ts'

/** A row a claim statement changed to Processing: it has started by then. */
export type ClaimedRow = ChangedRow & { processing_started_at: number }

/** Records the effects of a claim on the aggregates and the change log, and returns the claims. */
export function recordClaims (rows: ClaimedRow[], token: string, now: number, delta: StatsDelta, log: ChangeLog): Claim[] {
  delta.move('Pending', 'Processing', rows.length)
  for (const row of rows) {
    if (row.attempts === 1) delta.started(row.created_at, row.processing_started_at)
    log.add(row, 'Processing', now)
  }
  return rows.map((row) => ({ order_id: row.order_id, token, attempts: row.attempts }))
}

/**
 * Records claims handed back unfinished, from each row as it was while claimed: a handed-back
 * claim was no attempt, and undoing a first one un-starts the order.
 */
export function recordReleases (rows: ClaimedRow[], now: number, delta: StatsDelta, log: ChangeLog): number {
  delta.move('Processing', 'Pending', rows.length)
  for (const row of rows) {
    const first = row.attempts === 1
    if (first) delta.unstarted(row.created_at, row.processing_started_at)
    log.add({ ...row, attempts: row.attempts - 1, processing_started_at: first ? null : row.processing_started_at }, 'Pending', now)
  }
  return rows.length
}
