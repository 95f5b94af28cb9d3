import { ORDER_STATUSES } from '../../order.ts'
import { FINISHED_STATUSES, type ListOrder } from '../order-store.ts'

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

const ENDPOINT_COLUMNS = 'id, url, events, description, secret, created_at, last_error, last_error_at, consecutive_failures, circuit_open_until'
const DELIVERY_COLUMNS = `seq, id, endpoint_id, order_id, event_type, status, attempts, next_attempt_at, last_error,
  last_status_code, created_at, delivered_at`
/** What a deliverer needs of a delivery it claimed (with its endpoint's url and secret, read beside it). */
const CLAIMED_DELIVERY = 'seq, id, endpoint_id, order_id, payload, attempts, created_at'

/** What a delete returns of each order, as it was (a DeletedRow). */
const DELETED = 'order_id, user_id, status, attempts, created_at, processing_started_at, completed_at'
/** Orders that may be deleted: finished; written as orders_finished's condition is (see its migration). */
const FINISHED = "(status = 'Completed' OR status = 'Cancelled' OR status = 'Failed')"

/**
 * Deletes the oldest orders of one finished status last updated before @before. SQLite uses a
 * partial index only when the query repeats its condition word for word, hence FINISHED beside the status.
 */
function sweepOrdersSql (status: string): string {
  return `DELETE FROM orders WHERE seq IN (SELECT seq FROM orders INDEXED BY orders_finished
      WHERE ${FINISHED} AND status = '${status}' AND updated_at < @before ORDER BY updated_at LIMIT @limit)
    RETURNING ${DELETED}`
}

/** Retention's sweeps of orders, by status: prepared on first use, as orders_finished may be absent (see the store). */
export const SWEEP_ORDERS = {
  Completed: sweepOrdersSql('Completed'),
  Cancelled: sweepOrdersSql('Cancelled'),
  Failed: sweepOrdersSql('Failed')
} as const

/** Claims the oldest claimable orders, returning `returning` of each. */
function claimSql (returning: string): string {
  return `UPDATE orders SET status = 'Processing', claim_token = @token, lease_until = @now + @leaseMs,
      attempts = attempts + 1, processing_started_at = COALESCE(processing_started_at, @now), updated_at = @now
    WHERE seq IN (SELECT seq FROM orders INDEXED BY orders_claimable WHERE status = 'Pending' AND available_at <= @now
      AND (SELECT state FROM processing_state) = 'running'
      ORDER BY available_at, seq LIMIT @limit)
    RETURNING ${returning}`
}

export const SQL = {
  insert: `INSERT INTO orders (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at, traceparent)
    VALUES (?, ?, ?, ?, 'Pending', ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`,
  get: `SELECT ${ORDER_COLUMNS} FROM orders WHERE order_id = ?`,
  cancel: `UPDATE orders SET status = 'Cancelled', updated_at = ?
    WHERE order_id = ? AND status = 'Pending' RETURNING ${ORDER_COLUMNS}`,
  claim: claimSql(`${CHANGED}, traceparent`),
  // The same, returning whole orders, for work that reads them: 5.4 ms for 1,000 against 4.3 ms, so
  // the simulated work, which reads none, keeps the narrow one.
  claimOrders: claimSql(ORDER_COLUMNS),
  // The same with the traceparent kept with each order (last, after the columns recordFromColumns reads), while tracing is on.
  claimOrdersTraced: claimSql(`${ORDER_COLUMNS}, traceparent`),
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
  // A retry must know each row as it was while Failed (its run leaves the sums), and RETURNING
  // gives a row as it becomes: SQLite reads it first (`failed`, `failedChunk`), PostgreSQL in the same statement.
  failed: "SELECT order_id, created_at, processing_started_at, attempts FROM orders WHERE order_id = ? AND status = 'Failed'",
  failedChunk: `SELECT seq, ${CHANGED} FROM orders INDEXED BY orders_by_status
    WHERE status = 'Failed' AND seq > ? ORDER BY seq LIMIT ?`,
  requeue: `UPDATE orders SET status = 'Pending', available_at = @now, updated_at = @now,
      attempts = 0, processing_started_at = NULL, completed_at = NULL
    WHERE order_id = @orderId AND status = 'Failed'
    RETURNING ${ORDER_COLUMNS}`,
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
  deleteOrder: `DELETE FROM orders WHERE order_id = ? AND ${FINISHED} RETURNING ${DELETED}`,
  // Each finished status's range of orders_by_status_user, in any order: an erasure takes them all.
  deleteUserOrders: `DELETE FROM orders WHERE seq IN (SELECT seq FROM orders INDEXED BY orders_by_status_user
      WHERE status IN (${FINISHED_STATUSES.map((status) => `'${status}'`).join(', ')}) AND user_id = @userId LIMIT @limit)
    RETURNING ${DELETED}`,
  // Asked again: the row is updated (to itself), not left alone, so that on PostgreSQL the ask waits for a batch
  // that holds it and, if that batch ended the erasure, makes a new one: orders finished meanwhile are erased too.
  requestErasure: 'INSERT INTO erasures (user_id, requested_at) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET requested_at = erasures.requested_at',
  erasures: 'SELECT user_id FROM erasures ORDER BY user_id LIMIT ?',
  erasure: 'SELECT 1 FROM erasures WHERE user_id = ?',
  endErasure: 'DELETE FROM erasures WHERE user_id = ?',
  // A claimed delivery's next_attempt_at is the end of its lease.
  deleteOrderDeliveries: `DELETE FROM webhook_deliveries INDEXED BY webhook_deliveries_by_order WHERE order_id = ?
    RETURNING endpoint_id, order_id, status, CASE WHEN lease_token IS NOT NULL THEN next_attempt_at END AS leased_until`,
  // An erased order's order.deleted to an endpoint waits for the end of the lease of an attempt of that order under way there.
  holdDeletions: `UPDATE webhook_deliveries INDEXED BY webhook_deliveries_chain SET next_attempt_at = MAX(next_attempt_at, @until)
    WHERE endpoint_id = @endpointId AND order_id = @orderId AND status = 'pending'`,
  sweepDeliveries: `DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM webhook_deliveries INDEXED BY webhook_deliveries_settled
      WHERE (status = 'delivered' OR status = 'failed') AND updated_at < @before ORDER BY updated_at LIMIT @limit)
    RETURNING endpoint_id, status`,
  sweepBatches: `DELETE FROM populate_batches WHERE batch_id IN (SELECT batch_id FROM populate_batches
      WHERE finished_at < @before LIMIT @limit)`,
  stats: 'SELECT name, value FROM order_stats',
  addStat: 'UPDATE order_stats SET value = value + ? WHERE name = ?',
  openBatch: `INSERT INTO populate_batches (batch_id, total_entries, created_at)
    VALUES (?, ?, ?) ON CONFLICT (batch_id) DO NOTHING`,
  batch: 'SELECT batch_id, total_entries, entries_done, failure_count, failed_ids FROM populate_batches WHERE batch_id = ?',
  advanceBatch: `UPDATE populate_batches SET entries_done = @done, finished_at = CASE WHEN @done = total_entries THEN @now END
    WHERE batch_id = @batchId AND entries_done = @from`,
  batchFailures: 'UPDATE populate_batches SET failure_count = ?, failed_ids = ? WHERE batch_id = ?',
  processingState: 'SELECT state, since FROM processing_state',
  // Only a change of state moves `since`.
  setProcessingState: `UPDATE processing_state SET state = @state, since = @now WHERE state <> @state
    RETURNING state, since`,
  cursorKey: "SELECT value FROM service_keys WHERE name = 'cursor'",
  // As many pages as a create writes (the row, its indexes, the aggregates: ~8 of 4 KiB): after a
  // checkpoint the write-ahead log is reused from its start, so on a full disk a one-page check
  // still fitted where no create did, and /ready said ready while every create was refused.
  readinessCheck: 'UPDATE readiness_checks SET checked_at = ?, room = zeroblob(32768) WHERE id = 1',

  countEndpoints: 'SELECT count(*) AS n FROM webhook_endpoints',
  insertEndpoint: `INSERT INTO webhook_endpoints (id, url, events, description, secret, created_at)
    VALUES (@id, @url, @events, @description, @secret, @now)`,
  endpoints: `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id`,
  endpoint: `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?`,
  // At most MAX_ENDPOINTS endpoints, so all their counts are few rows.
  endpointCounts: 'SELECT endpoint_id, name, SUM(value) AS value FROM webhook_stats GROUP BY endpoint_id, name',
  deleteEndpoint: 'DELETE FROM webhook_endpoints WHERE id = ?',
  deleteEndpointCounts: 'DELETE FROM webhook_stats WHERE endpoint_id = ?',
  insertPurge: 'INSERT INTO webhook_endpoint_purges (endpoint_id, deleted_at) VALUES (?, ?)',
  nextPurge: 'SELECT endpoint_id FROM webhook_endpoint_purges ORDER BY deleted_at, endpoint_id LIMIT 1',
  purgeDeliveries: `DELETE FROM webhook_deliveries WHERE seq IN (
    SELECT seq FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint WHERE endpoint_id = ? LIMIT ?)`,
  endPurge: 'DELETE FROM webhook_endpoint_purges WHERE endpoint_id = ?',
  addDeliveryCount: `INSERT INTO webhook_stats (endpoint_id, name, shard, value) VALUES (?, ?, 0, ?)
    ON CONFLICT (endpoint_id, name, shard) DO UPDATE SET value = value + excluded.value`,
  insertDelivery: `INSERT INTO webhook_deliveries (id, endpoint_id, order_id, event_type, payload, status, next_attempt_at, created_at, updated_at)
    VALUES (@id, @endpoint_id, @order_id, @event_type, @payload, 'pending', @now, @created_at, @now)`,
  redeliver: `UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = @now, updated_at = @now
    WHERE endpoint_id = @endpointId AND status = 'failed'`,
  deliveries: `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint
    WHERE endpoint_id = @endpointId AND status = @status AND seq < @before ORDER BY seq DESC LIMIT @limit`,
  // Due deliveries, each with the time its order's earliest pending delivery to the same endpoint
  // is due (blocked_until) when there is one: such a delivery waits for it. Those of an endpoint
  // whose circuit is open are passed over, so that its backlog does not fill the window; one
  // whose cool-down has passed (open_until) gets a probe.
  dueDeliveries: `SELECT d.seq, d.endpoint_id, w.circuit_open_until AS open_until,
      (SELECT e.next_attempt_at FROM webhook_deliveries e INDEXED BY webhook_deliveries_chain
        WHERE e.endpoint_id = d.endpoint_id AND e.order_id = d.order_id AND e.status = 'pending' AND e.seq < d.seq
        ORDER BY e.seq LIMIT 1) AS blocked_until
    FROM webhook_deliveries d INDEXED BY webhook_deliveries_due LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= @now AND (w.circuit_open_until IS NULL OR w.circuit_open_until <= @now)
    ORDER BY d.next_attempt_at, d.seq LIMIT @limit`,
  claimDelivery: `UPDATE webhook_deliveries SET lease_token = @token, next_attempt_at = @leaseUntil
    WHERE seq = @seq RETURNING ${CLAIMED_DELIVERY},
      (SELECT o.traceparent FROM orders o WHERE o.order_id = webhook_deliveries.order_id) AS traceparent`,
  putOffDelivery: 'UPDATE webhook_deliveries SET next_attempt_at = @at WHERE seq = @seq',
  // While its probe is under way an endpoint's circuit stays open: no other attempt goes.
  probeEndpoint: 'UPDATE webhook_endpoints SET circuit_open_until = @leaseUntil WHERE id = @endpointId',
  deliveryTarget: 'SELECT url, secret FROM webhook_endpoints WHERE id = ?',
  delivered: `UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = @now, updated_at = @now,
      next_attempt_at = NULL, lease_token = NULL, last_status_code = @statusCode, last_error = NULL
    WHERE seq = @seq AND lease_token = @token AND status = 'pending' RETURNING endpoint_id, order_id`,
  retryDelivery: `UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = @now + @retryInMs, updated_at = @now,
      lease_token = NULL, last_status_code = @statusCode, last_error = @error
    WHERE seq = @seq AND lease_token = @token AND status = 'pending' RETURNING endpoint_id, order_id`,
  failDelivery: `UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, next_attempt_at = NULL, updated_at = @now,
      lease_token = NULL, last_status_code = @statusCode, last_error = @error
    WHERE seq = @seq AND lease_token = @token AND status = 'pending' RETURNING endpoint_id, order_id`,
  discardDelivery: `DELETE FROM webhook_deliveries WHERE seq = @seq AND lease_token = @token AND status = 'pending'
    RETURNING endpoint_id, order_id`,
  // The next pending delivery of an order to an endpoint whose earlier one was just settled is due at once.
  promoteNext: `UPDATE webhook_deliveries SET next_attempt_at = @now
    WHERE seq = (SELECT seq FROM webhook_deliveries INDEXED BY webhook_deliveries_chain
        WHERE endpoint_id = @endpointId AND order_id = @orderId AND status = 'pending' ORDER BY seq LIMIT 1)
      AND lease_token IS NULL AND next_attempt_at > @now`,
  endpointError: 'UPDATE webhook_endpoints SET last_error = @error, last_error_at = @now WHERE id = @endpointId',
  // A success closes the circuit; a failed probe reopens it for twice the last cool-down (up to
  // @maxCooldownMs); failures while closed count up to @failures, which opens it. Failures of
  // attempts claimed before it opened change nothing.
  endpointCircuit: `UPDATE webhook_endpoints SET
      consecutive_failures = CASE WHEN @succeeded THEN 0 WHEN @probeFailed THEN consecutive_failures + 1
        WHEN circuit_open_until IS NULL THEN MIN(consecutive_failures + @failed, @failures) ELSE consecutive_failures END,
      circuit_open_until = CASE WHEN @succeeded THEN NULL
        WHEN @probeFailed THEN @now + MIN(@cooldownMs << MIN(MAX(consecutive_failures + 1 - @failures, 0), 20), @maxCooldownMs)
        WHEN circuit_open_until IS NULL AND consecutive_failures + @failed >= @failures THEN @now + @cooldownMs
        ELSE circuit_open_until END
    WHERE id = @endpointId`,
  releaseDelivery: `UPDATE webhook_deliveries SET lease_token = NULL, next_attempt_at = @now, updated_at = @now
    WHERE seq = @seq AND lease_token = @token AND status = 'pending'`,
  // The earliest due time of a delivery whose endpoint's circuit is not open, or the end of an open
  // circuit's cool-down when it has deliveries waiting, whichever is first. In due order, the first
  // match ends the search: only an open circuit's backlog due before it is read past.
  nextDelivery: `SELECT MIN(COALESCE(due, reopens), COALESCE(reopens, due)) - @now AS delay FROM (
      SELECT (SELECT d.next_attempt_at FROM webhook_deliveries d INDEXED BY webhook_deliveries_due
          WHERE d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id AND w.circuit_open_until > @now)
          ORDER BY d.next_attempt_at LIMIT 1) AS due,
        (SELECT MIN(w.circuit_open_until) FROM webhook_endpoints w WHERE w.circuit_open_until > @now
          AND EXISTS (SELECT 1 FROM webhook_deliveries d INDEXED BY webhook_deliveries_by_endpoint WHERE d.endpoint_id = w.id AND d.status = 'pending')) AS reopens)`,
  subscriptions: 'SELECT id, events FROM webhook_endpoints'
} as const

/**
 * A list page for one combination of filters, in one order, with one more order than the limit to
 * tell whether another page follows. Newest first reads the same index backwards.
 */
export function listSql (byStatus: boolean, byUser: boolean, order: ListOrder): string {
  const keyset = order === 'asc' ? 'seq > @after' : 'seq < @after'
  const sort = `ORDER BY seq ${order.toUpperCase()} LIMIT @limit`
  // A customer's orders of every status, with no index of their own (orders_by_user cost every
  // insert an index entry): each status's range of orders_by_status_user, merged in seq order.
  if (byUser && !byStatus) {
    return `${ORDER_STATUSES.map((status) => `SELECT ${ORDER_COLUMNS} FROM orders INDEXED BY orders_by_status_user
      WHERE status = '${status}' AND user_id = @userId AND ${keyset}`).join(' UNION ALL ')} ${sort}`
  }
  const where = [keyset]
  if (byStatus) where.push('status = @status')
  if (byUser) where.push('user_id = @userId')
  // Without a status, the rowid (which is seq).
  const index = !byStatus ? 'NOT INDEXED' : byUser ? 'INDEXED BY orders_by_status_user' : 'INDEXED BY orders_by_status'
  return `SELECT ${ORDER_COLUMNS} FROM orders ${index}
    WHERE ${where.join(' AND ')} ${sort}`
}
