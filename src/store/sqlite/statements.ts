/*
 * Every statement of the SQLite store, by operation. src/store/pg/statements.ts has the same keys in
 * PostgreSQL's dialect, so each operation's two forms can be read side by side. SQLite runs in the
 * service's process, so one statement per order costs no round trip: settles and hand-backs loop
 * over their orders, where PostgreSQL sends one statement for all of them (unnest).
 *
 * Each read that must cost its limit whatever the data names its index (INDEXED BY): SQLite advises
 * it for time-critical queries, and without statistics it picked an index covering one filter (or,
 * for claims, the status index plus a sort) and walked it: 100-200 ms for one status or user of a
 * million orders. A schema change that loses the index then fails loudly instead of slowly.
 */

/** An order's columns; a claim that brings orders reads them raw, in this order (recordFromColumns in sqlite-store.ts). */
const ORDER_COLUMNS = `seq, order_id, user_id, item_ids, total_cents, status, created_at,
  processing_started_at, completed_at, updated_at, attempts, last_error, result`
/** What a statement that changed an order's status returns about it (a ChangedRow). */
const CHANGED = 'order_id, attempts, created_at, processing_started_at'
/** The same, for an order that became Pending: from when it can be claimed (a QueuedRow). */
const QUEUED = `${CHANGED}, available_at`

/** Claims the oldest claimable orders, returning `returning` of each. */
function claimSql (returning: string): string {
  return `UPDATE orders SET status = 'Processing', claim_token = @token, lease_until = @now + @leaseMs,
      attempts = attempts + 1, processing_started_at = COALESCE(processing_started_at, @now), updated_at = @now
    WHERE seq IN (SELECT seq FROM orders INDEXED BY orders_claimable WHERE status = 'Pending' AND available_at <= @now
      ORDER BY available_at, seq LIMIT @limit)
    RETURNING ${returning}`
}

export const SQL = {
  insert: `INSERT INTO orders (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
    VALUES (?, ?, ?, ?, 'Pending', ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`,
  get: `SELECT ${ORDER_COLUMNS} FROM orders WHERE order_id = ?`,
  cancel: `UPDATE orders SET status = 'Cancelled', updated_at = ?
    WHERE order_id = ? AND status = 'Pending' RETURNING ${ORDER_COLUMNS}`,
  claim: claimSql(CHANGED),
  // The same, returning whole orders, for work that reads them: 5.4 ms for 1,000 against 4.3 ms, so
  // the simulated work, which reads none, keeps the narrow one.
  claimOrders: claimSql(ORDER_COLUMNS),
  complete: `UPDATE orders SET status = 'Completed', completed_at = @now, updated_at = @now,
      claim_token = NULL, lease_until = NULL, last_error = NULL, result = @result
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'
    RETURNING ${CHANGED}`,
  retry: `UPDATE orders SET status = 'Pending', available_at = @retryAt, updated_at = @now,
      last_error = @error, claim_token = NULL, lease_until = NULL
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'
    RETURNING ${QUEUED}`,
  fail: `UPDATE orders SET status = 'Failed', updated_at = @now, last_error = @error,
      claim_token = NULL, lease_until = NULL
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'
    RETURNING ${CHANGED}`,
  // A hand-back must know each row as it was while claimed, and RETURNING gives a row as it becomes:
  // SQLite reads it first (`claimed`), PostgreSQL in the same statement.
  claimed: `SELECT order_id, created_at, processing_started_at, attempts FROM orders
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'`,
  // A handed-back claim was no attempt: it is undone, and the first one un-starts the order.
  release: `UPDATE orders SET status = 'Pending', available_at = @now, updated_at = @now,
      claim_token = NULL, lease_until = NULL, attempts = attempts - 1,
      processing_started_at = CASE WHEN attempts = 1 THEN NULL ELSE processing_started_at END
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'`,
  // The held tokens come as one JSON array: a statement has a fixed number of parameters.
  failExpired: `UPDATE orders SET status = 'Failed', updated_at = @now,
      last_error = 'lease expired on the last attempt', claim_token = NULL, lease_until = NULL
    WHERE status = 'Processing' AND lease_until < @now AND attempts >= @maxAttempts
      AND claim_token NOT IN (SELECT value FROM json_each(@held))
    RETURNING ${CHANGED}`,
  retryExpired: `UPDATE orders SET status = 'Pending', available_at = @now, updated_at = @now,
      last_error = 'lease expired', claim_token = NULL, lease_until = NULL
    WHERE status = 'Processing' AND lease_until < @now AND claim_token NOT IN (SELECT value FROM json_each(@held))
    RETURNING ${QUEUED}`,
  extendLeases: `UPDATE orders SET lease_until = @now + @leaseMs
    WHERE order_id = @orderId AND claim_token = @token AND status = 'Processing'`,
  nextAvailable: "SELECT MIN(available_at) AS at FROM orders INDEXED BY orders_claimable WHERE status = 'Pending'",
  idsByStatus: `SELECT seq, order_id FROM orders INDEXED BY orders_by_status
    WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?`,
  stats: 'SELECT name, value FROM order_stats',
  addStat: 'UPDATE order_stats SET value = value + ? WHERE name = ?',
  openBatch: `INSERT INTO populate_batches (batch_id, total_entries, created_at)
    VALUES (?, ?, ?) ON CONFLICT (batch_id) DO NOTHING`,
  batch: 'SELECT batch_id, total_entries, entries_done, failure_count, failed_ids FROM populate_batches WHERE batch_id = ?',
  advanceBatch: 'UPDATE populate_batches SET entries_done = ? WHERE batch_id = ? AND entries_done = ?',
  batchFailures: 'UPDATE populate_batches SET failure_count = ?, failed_ids = ? WHERE batch_id = ?',
  cursorKey: "SELECT value FROM service_keys WHERE name = 'cursor'",
  readinessCheck: 'UPDATE readiness_checks SET checked_at = ? WHERE id = 1'
} as const

/** A list page for one combination of filters, with one more order than the limit to tell whether another page follows. */
export function listSql (byStatus: boolean, byUser: boolean): string {
  const where = ['seq > @after']
  if (byStatus) where.push('status = @status')
  if (byUser) where.push('user_id = @userId')
  return `SELECT ${ORDER_COLUMNS} FROM orders ${listIndex(byStatus, byUser)}
    WHERE ${where.join(' AND ')} ORDER BY seq LIMIT @limit`
}

function listIndex (byStatus: boolean, byUser: boolean): string {
  if (byStatus && byUser) return 'INDEXED BY orders_by_status_user'
  if (byStatus) return 'INDEXED BY orders_by_status'
  if (byUser) return 'INDEXED BY orders_by_user'
  return 'NOT INDEXED' // the rowid, which is seq
}
