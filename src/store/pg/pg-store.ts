import { randomInt, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { NewOrder, OrderRecord, OrderStatus } from '../../order.ts'
import { ORDER_STATUSES, sameOrder, toCents } from '../../order.ts'
import { GroupCommit, type Settled } from '../group-commit.ts'
import { migrate } from './migrations.ts'
import { PgListener } from './listener.ts'
import { decodeAvailableAt, decodeChanges, encodeChanges } from './notifications.ts'
import { StatsDelta, statsFromRows } from '../stats-delta.ts'
import type {
  CancelResult, ChangeListener, Claim, CreateResult, IdPage, IndexedCall, ListQuery, OrderChange, OrderPage, OrderStats, OrderStore,
  Outcome, PopulateBatch, WorkListener
} from '../order-store.ts'
import { advanced } from '../populate-batches.ts'
import { ORDER_OTHER_BYTES, PAGE_BYTES } from '../page-size.ts'
import { BatchConflictError } from '../store-errors.ts'
import { Listeners } from '../listeners.ts'
import { ChangeListeners, ChangeLog, type ChangedRow } from '../change-log.ts'
import { recordClaims, recordReleases, type ClaimedRow } from '../claimed-rows.ts'
import { StoreUnavailableError } from '../store-errors.ts'
import type { StoreLog } from '../store-log.ts'

const CHANNEL = 'orders_available'
const CHANGES_CHANNEL = 'order_changes'
/** The columns of a ChangedRow, returned by every statement that changes a status. */
const CHANGED_COLUMNS = 'o.order_id, o.attempts, o.created_at, o.processing_started_at'
/**
 * The database's clock in epoch ms, the same for every process, for leases: they are set and
 * compared by it, so a worker whose clock is off neither keeps nor takes over claims too early.
 * The transaction's start: one instant for all its statements (recovery fails the expired claims
 * on their last attempt, then retries the others, and both must see the same ones expired).
 */
const DATABASE_NOW_MS = '(extract(epoch FROM now()) * 1000)::bigint'
/** Counter shards: each process writes one, picked at random, so that no single row is hot. */
const STAT_SHARDS = 64
/**
 * Creates waiting for the next group commit; more are refused (503). Healthy, a batch is what
 * arrived during one commit, at most one per concurrent client (the benchmark's 100 make batches
 * of up to 100), and 1000 commit in 25-60 ms (the largest bodies, 1000 item ids each, in 0.9 s):
 * well within DATABASE_TIMEOUT_MS. A full queue means a stalled database, not load, and what it
 * holds stays small: a thousand of the largest bodies are about 20 MB.
 */
export const MAX_WAITING_CREATES = 1000

const ORDER_COLUMNS = `seq, order_id, user_id, item_ids, total_cents, status, created_at,
  processing_started_at, completed_at, updated_at, attempts, last_error`

// BIGINT columns hold epoch milliseconds, cents and ids below 2^53: numbers, not strings.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser
}

/** `deadline`: when the create's time runs out (DATABASE_TIMEOUT_MS after it was asked for). */
interface PendingCreate { order: NewOrder, now: number, availableAt: number, deadline: number }

export interface PgStoreOptions {
  /** DATABASE_TIMEOUT_MS: the longest a store call may take, waiting for a connection included. */
  timeoutMs: number
  log: StoreLog
}

/** A node of the plan PostgreSQL picks for a statement (EXPLAIN (FORMAT JSON)), with the fields tests read. */
export interface PlanNode {
  'Node Type': string
  'Relation Name'?: string
  'Index Name'?: string
  'Index Cond'?: string
  Filter?: string
  Plans?: PlanNode[]
}

/**
 * A filtered list's keyset as a range over the key of the index whose columns are the filters and
 * then seq (orders_by_status_user and the like), ordered by that key. Given plain equalities,
 * PostgreSQL drops the filtered columns from the order and, where it expects matches to be dense,
 * reads the primary key in seq order filtering rows out (seen with 200,000 orders): a walk through
 * every order when the matches are rare or all late. A range over the whole key leaves only that index
 * to read it in order.
 */
function listQuery ({ status, userId, limit, after = 0 }: ListQuery): pg.QueryConfig {
  const values: unknown[] = [after, ORDER_OTHER_BYTES, PAGE_BYTES]
  const columns: string[] = []
  const params: string[] = []
  if (status !== undefined) { columns.push('status'); params.push(`$${values.push(status)}`) }
  if (userId !== undefined) { columns.push('user_id'); params.push(`$${values.push(userId)}`) }
  const key = [...columns, 'seq'].join(', ')
  const keyset = columns.length === 0 ? 'seq > $1' : `(${key}) > (${params.join(', ')}, $1) AND (${columns.join(', ')}) <= (${params.join(', ')})`
  const bytes = '$2 + octet_length(order_id) + octet_length(item_ids::text) + coalesce(octet_length(last_error), 0)'
  // One more order than the limit is read, to tell whether another page follows. Only the orders
  // that fit in PAGE_BYTES of JSON (and always the first) leave the database; more tells whether any follows them.
  return {
    text: `SELECT ${ORDER_COLUMNS}, more FROM (
        SELECT ${ORDER_COLUMNS}, sum(${bytes}) OVER page AS bytes_through, row_number() OVER page AS position,
          lead(seq) OVER page IS NOT NULL AS more
        FROM orders WHERE ${keyset} WINDOW page AS (ORDER BY ${key}) ORDER BY ${key} LIMIT $${values.push(limit + 1)}
      ) page WHERE bytes_through <= $3 OR position = 1 ORDER BY ${key}`,
    values
  }
}

type Tx = pg.PoolClient

/**
 * The scale-out store: several API and worker processes share one PostgreSQL database, which is
 * also the queue. Claims skip rows other workers hold (FOR UPDATE SKIP LOCKED); new work is
 * announced with NOTIFY, so idle workers wake without polling.
 */
export class PgStore implements OrderStore {
  private readonly workListeners = new Listeners<number>()
  private readonly changeListeners = new ChangeListeners()
  private readonly shard = randomInt(STAT_SHARDS)
  private readonly creates = new GroupCommit<PendingCreate, CreateResult>((items) => this.createBatch(items), MAX_WAITING_CREATES)
  private readonly listener: PgListener
  private readonly timeoutMs: number
  private readonly log: StoreLog

  private constructor (private readonly pool: pg.Pool, connection: pg.ClientConfig, { timeoutMs, log }: PgStoreOptions) {
    this.timeoutMs = timeoutMs
    this.log = log
    this.listener = new PgListener({
      connection: { ...connection, query_timeout: timeoutMs },
      checkEveryMs: timeoutMs,
      channels: {
        [CHANNEL]: this.receive(decodeAvailableAt, (at) => this.workListeners.emit(at)),
        [CHANGES_CHANNEL]: this.receive(decodeChanges, (changes) => this.changeListeners.emit(changes))
      },
      // Work announced while the listener was away would wait for the next announcement.
      onReconnected: () => this.workListeners.emit(Date.now()),
      log
    })
  }

  static async open (connectionString: string, options: PgStoreOptions): Promise<PgStore> {
    const { timeoutMs } = options
    const connection: pg.ClientConfig = {
      connectionString,
      connectionTimeoutMillis: timeoutMs,
      // The system probes a connection idle this long, so a server that vanished is noticed between queries too.
      keepAlive: true,
      keepAliveInitialDelayMillis: timeoutMs
    }
    await migrate(connection)
    const pool = new pg.Pool({
      ...connection,
      types,
      max: 10,
      // Waiting for a pooled connection is bounded by connectionTimeoutMillis too. On the client
      // side, a query whose answer does not come in time fails and its connection is discarded;
      // on the server side a statement (waiting for a lock, say) is stopped, and a transaction
      // its client left open ends, releasing its locks.
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      idle_in_transaction_session_timeout: timeoutMs
    })
    // An idle client that loses its connection must not crash the process; the next query reconnects.
    pool.on('error', () => {})
    const store = new PgStore(pool, connection, options)
    await store.listener.ready
    return store
  }

  /** A notification handler: a payload this service did not send (any database user may NOTIFY) is logged and ignored. */
  private receive<T> (decode: (payload: string) => T, deliver: (value: T) => void): (payload: string) => void {
    return (payload) => {
      let value: T
      try {
        value = decode(payload)
      } catch (err) {
        this.log.warn({ err, payload: payload.slice(0, 200) }, 'ignored a notification this service did not send')
        return
      }
      deliver(value)
    }
  }

  private deadlinePassed (): StoreUnavailableError {
    return new StoreUnavailableError(`PostgreSQL did not answer within DATABASE_TIMEOUT_MS (${this.timeoutMs} ms)`)
  }

  /** A pooled connection; past the deadline, a "store unavailable" error instead. */
  private async connect (deadline: number): Promise<pg.PoolClient> {
    if (Date.now() >= deadline) throw this.deadlinePassed()
    const connecting = this.pool.connect()
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(this.deadlinePassed()), deadline - Date.now())
    })
    try {
      return await Promise.race([connecting, late])
    } catch (err) {
      // A connection that comes after the deadline goes back to the pool unused.
      connecting.then((client) => client.release(), () => {})
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Runs `fn` in a transaction that ends by `deadline`, waiting for a connection included. Past
   * it the connection is cut: the statement under way fails at once, the client is discarded,
   * and the server rolls back (its statement_timeout stops a statement still waiting for a lock).
   */
  private async transaction<T> (
    fn: (tx: Tx, delta: StatsDelta, log: ChangeLog) => Promise<T>,
    deadline = Date.now() + this.timeoutMs
  ): Promise<T> {
    const tx = await this.connect(deadline)
    let failure: Error | undefined
    // A connection lost between two queries is emitted as an event: without a listener it would
    // crash the process. The next query fails with it instead, and the client is discarded.
    const onLost = (err: Error) => { failure = err }
    tx.on('error', onLost)
    let expired = false
    const timer = setTimeout(() => {
      expired = true
      tx.connection.stream.destroy()
    }, deadline - Date.now())
    try {
      await tx.query('BEGIN')
      const delta = new StatsDelta()
      // Every process may stream changes, so they are always announced (on commit, in commit order).
      const log = new ChangeLog()
      const result = await fn(tx, delta, log)
      await this.apply(tx, delta)
      await this.announce(tx, log.changes)
      await tx.query('COMMIT')
      return result
    } catch (err) {
      failure = err as Error
      await tx.query('ROLLBACK').catch(() => {})
      throw expired ? this.deadlinePassed() : err
    } finally {
      clearTimeout(timer)
      tx.off('error', onLost)
      tx.release(failure)
    }
  }

  private async apply (tx: Tx, delta: StatsDelta): Promise<void> {
    if (delta.changes.size === 0) return
    // Rows are locked in name order, so two transactions on the same shard cannot deadlock.
    const entries = [...delta.changes].sort(([a], [b]) => (a < b ? -1 : 1))
    await tx.query(`INSERT INTO order_stats (name, shard, value)
      SELECT name, $1, value FROM unnest($2::text[], $3::bigint[]) AS d (name, value)
      ON CONFLICT (name, shard) DO UPDATE SET value = order_stats.value + EXCLUDED.value`,
    [this.shard, entries.map(([name]) => name), entries.map(([, value]) => value)])
  }

  private async announce (tx: Tx, changes: OrderChange[]): Promise<void> {
    if (changes.length === 0) return
    await tx.query('SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload', [CHANGES_CHANNEL, encodeChanges(changes)])
  }

  private async notify (tx: Tx, availableAt: number): Promise<void> {
    await tx.query('SELECT pg_notify($1, $2)', [CHANNEL, String(availableAt)])
  }

  /** Inserts rows in one statement; returns the ids that were inserted. */
  private async insert (tx: Tx, orders: Array<{ order: NewOrder, now: number, availableAt: number }>): Promise<Set<string>> {
    const { rows } = await tx.query<{ order_id: string }>(`INSERT INTO orders
      (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
      SELECT order_id, user_id, item_ids::jsonb, total_cents, 'Pending', created_at, available_at, created_at
      FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
        AS n (order_id, user_id, item_ids, total_cents, created_at, available_at)
      ON CONFLICT (order_id) DO NOTHING
      RETURNING order_id`, [
      orders.map((o) => o.order.order_id),
      orders.map((o) => o.order.user_id),
      orders.map((o) => JSON.stringify(o.order.item_ids)),
      orders.map((o) => toCents(o.order.total_amount)),
      orders.map((o) => o.now),
      orders.map((o) => o.availableAt)
    ])
    return new Set(rows.map((row) => row.order_id))
  }

  private async createBatch (items: PendingCreate[]): Promise<Array<Settled<CreateResult>>> {
    // The batch ends when its oldest create's time runs out: no create waits past its own deadline.
    const deadline = Math.min(...items.map((item) => item.deadline))
    return this.transaction(async (tx, delta, log) => {
      const inserted = await this.insert(tx, items)
      delta.add('Pending', inserted.size)
      for (const { order, now } of items) {
        if (inserted.has(order.order_id)) log.created(order.order_id, now)
      }
      const others = items.filter((item) => !inserted.delete(item.order.order_id))
      // Only ids that were not inserted need their stored order compared (a retry or a conflict).
      const existing = new Map(others.length === 0
        ? []
        : (await this.select(tx, 'order_id = ANY($1)', [others.map((o) => o.order.order_id)])).map((record) => [record.order_id, record]))
      const results = items.map((item): Settled<CreateResult> => {
        const record = others.includes(item) ? existing.get(item.order.order_id) : undefined
        if (!record) return { ok: true, value: 'created' }
        return { ok: true, value: sameOrder(record, item.order) ? 'exists' : 'conflict' }
      })
      if (others.length < items.length) await this.notify(tx, Math.min(...items.map((i) => i.availableAt)))
      return results
    }, deadline)
  }

  async create (order: NewOrder, now: number, availableAt: number): Promise<CreateResult> {
    return this.creates.submit({ order, now, availableAt, deadline: Date.now() + this.timeoutMs })
  }

  async createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]> {
    return this.transaction((tx, delta, log) => this.insertMany(tx, orders, now, availableAt, delta, log))
  }

  /** Inserts orders in a transaction; returns the ids that already existed. */
  private async insertMany (tx: Tx, orders: NewOrder[], now: number, availableAt: number, delta: StatsDelta, log: ChangeLog): Promise<string[]> {
    const inserted = await this.insert(tx, orders.map((order) => ({ order, now, availableAt })))
    delta.add('Pending', inserted.size)
    for (const id of inserted) log.created(id, now)
    if (inserted.size > 0) await this.notify(tx, availableAt)
    return orders.map((o) => o.order_id).filter((id) => !inserted.has(id))
  }

  private async select (db: Tx | pg.Pool, where: string, params: unknown[], tail = ''): Promise<OrderRecord[]> {
    const { rows } = await db.query<OrderRecord>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE ${where} ${tail}`, params)
    return rows
  }

  async get (orderId: string): Promise<OrderRecord | undefined> {
    return (await this.select(this.pool, 'order_id = $1', [orderId]))[0]
  }

  async list (query: ListQuery): Promise<OrderPage> {
    const { rows } = await this.pool.query<OrderRecord & { more?: boolean }>(listQuery(query))
    const more = rows.length > query.limit || rows.at(-1)?.more === true
    const orders = rows.slice(0, query.limit)
    for (const order of orders) delete order.more
    return { orders, lastSeq: more ? (orders.at(-1) as OrderRecord).seq : null }
  }

  async cancel (orderId: string, now: number): Promise<CancelResult> {
    return this.transaction(async (tx, delta, log): Promise<CancelResult> => {
      const { rows } = await tx.query<OrderRecord>(`UPDATE orders SET status = 'Cancelled', updated_at = $1
        WHERE order_id = $2 AND status = 'Pending' RETURNING ${ORDER_COLUMNS}`, [now, orderId])
      if (rows[0]) {
        delta.move('Pending', 'Cancelled')
        log.add(rows[0], 'Cancelled', now)
        return { cancelled: true, order: rows[0] }
      }
      return { cancelled: false, order: (await this.select(tx, 'order_id = $1', [orderId]))[0] }
    })
  }

  async claim (limit: number, now: number, leaseMs: number): Promise<Claim[]> {
    const token = randomUUID()
    return this.transaction(async (tx, delta, log) => {
      const { rows } = await tx.query<ClaimedRow>(claimQuery(limit, now, leaseMs, token))
      return recordClaims(rows, token, now, delta, log)
    })
  }

  async settle (outcomes: Outcome[], now: number): Promise<number> {
    const done = outcomes.filter((o) => o.ok)
    const retries = outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok && o.retryAt !== null)
    const failures = outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok && o.retryAt === null)
    const ids = (list: Outcome[]) => list.map((o) => o.claim.order_id)
    const tokens = (list: Outcome[]) => list.map((o) => o.claim.token)
    return this.transaction(async (tx, delta, log) => {
      let applied = 0
      if (done.length > 0) {
        const { rows } = await tx.query<ChangedRow>(`
          UPDATE orders o SET status = 'Completed', completed_at = $1, updated_at = $1,
            claim_token = NULL, lease_until = NULL, last_error = NULL
          FROM unnest($2::text[], $3::text[]) AS c (order_id, token)
          WHERE o.order_id = c.order_id AND o.claim_token = c.token AND o.status = 'Processing'
          RETURNING ${CHANGED_COLUMNS}`, [now, ids(done), tokens(done)])
        for (const row of rows) {
          delta.completed({ ...row, completed_at: now })
          log.add(row, 'Completed', now)
        }
        applied += rows.length
      }
      if (retries.length > 0) {
        const { rows } = await tx.query<ChangedRow>(`
          UPDATE orders o SET status = 'Pending', available_at = r.retry_at, updated_at = $1, last_error = r.error,
            claim_token = NULL, lease_until = NULL
          FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[]) AS r (order_id, token, retry_at, error)
          WHERE o.order_id = r.order_id AND o.claim_token = r.token AND o.status = 'Processing'
          RETURNING ${CHANGED_COLUMNS}`,
        [now, ids(retries), tokens(retries), retries.map((o) => o.retryAt), retries.map((o) => o.error)])
        delta.move('Processing', 'Pending', rows.length)
        for (const row of rows) log.add(row, 'Pending', now)
        applied += rows.length
        if (rows.length > 0) await this.notify(tx, Math.min(...retries.map((o) => o.retryAt as number)))
      }
      if (failures.length > 0) {
        const { rows } = await tx.query<ChangedRow>(`
          UPDATE orders o SET status = 'Failed', updated_at = $1, last_error = f.error, claim_token = NULL, lease_until = NULL
          FROM unnest($2::text[], $3::text[], $4::text[]) AS f (order_id, token, error)
          WHERE o.order_id = f.order_id AND o.claim_token = f.token AND o.status = 'Processing'
          RETURNING ${CHANGED_COLUMNS}`,
        [now, ids(failures), tokens(failures), failures.map((o) => o.error)])
        delta.move('Processing', 'Failed', rows.length)
        for (const row of rows) log.add(row, 'Failed', now)
        applied += rows.length
      }
      return applied
    })
  }

  async release (claims: Claim[], now: number): Promise<number> {
    return this.transaction(async (tx, delta, log) => {
      // A handed-back claim was no attempt: it is undone, and the first one un-starts the order.
      const { rows } = await tx.query<ClaimedRow>(`
        WITH held AS (
          SELECT o.order_id, o.created_at, o.processing_started_at, o.attempts FROM orders o
          JOIN unnest($2::text[], $3::text[]) AS c (order_id, token) ON o.order_id = c.order_id AND o.claim_token = c.token
          WHERE o.status = 'Processing' FOR UPDATE OF o
        )
        UPDATE orders o SET status = 'Pending', available_at = $1, updated_at = $1, claim_token = NULL, lease_until = NULL,
          attempts = o.attempts - 1,
          processing_started_at = CASE WHEN o.attempts = 1 THEN NULL ELSE o.processing_started_at END
        FROM held WHERE o.order_id = held.order_id
        RETURNING held.order_id, held.created_at, held.processing_started_at, held.attempts`,
      [now, claims.map((c) => c.order_id), claims.map((c) => c.token)])
      if (rows.length > 0) await this.notify(tx, now)
      return recordReleases(rows, now, delta, log)
    })
  }

  async recoverExpired (now: number, maxAttempts: number, heldTokens: readonly string[]): Promise<number> {
    return this.transaction(async (tx, delta, log) => {
      const failed = (await tx.query<ChangedRow>(`UPDATE orders o SET status = 'Failed', updated_at = $1,
          last_error = 'lease expired on the last attempt', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < ${DATABASE_NOW_MS} AND attempts >= $2 AND claim_token <> ALL($3::text[])
        RETURNING ${CHANGED_COLUMNS}`, [now, maxAttempts, heldTokens])).rows
      const retried = (await tx.query<ChangedRow>(`UPDATE orders o SET status = 'Pending', available_at = $1, updated_at = $1,
          last_error = 'lease expired', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < ${DATABASE_NOW_MS} AND claim_token <> ALL($2::text[])
        RETURNING ${CHANGED_COLUMNS}`, [now, heldTokens])).rows
      delta.move('Processing', 'Failed', failed.length).move('Processing', 'Pending', retried.length)
      for (const row of failed) log.add(row, 'Failed', now)
      for (const row of retried) log.add(row, 'Pending', now)
      if (retried.length > 0) await this.notify(tx, now)
      return failed.length + retried.length
    })
  }

  async nextAvailableAt (): Promise<number | null> {
    const { rows } = await this.pool.query<{ at: number | null }>(NEXT_AVAILABLE)
    return rows[0]?.at ?? null
  }

  async stats (): Promise<OrderStats> {
    const { rows } = await this.pool.query<{ name: string, value: number }>(
      'SELECT name, SUM(value)::bigint AS value FROM order_stats GROUP BY name')
    return statsFromRows(rows)
  }

  async idsByStatus (status: OrderStatus, limit: number, after = 0): Promise<IdPage> {
    const { rows } = await this.pool.query<{ seq: number, order_id: string }>(idsQuery(status, limit, after))
    const listed = rows.slice(0, limit)
    return { ids: listed.map((row) => row.order_id), lastSeq: rows.length > limit ? (listed.at(-1) as { seq: number }).seq : null }
  }

  /** The plan PostgreSQL picks for what a call runs, with its arguments (EXPLAIN (FORMAT JSON)). */
  async explain (...call: IndexedCall): Promise<PlanNode> {
    const { text, values } = indexedQuery(call)
    const { rows } = await this.pool.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (FORMAT JSON) ${text}`, values)
    return (rows[0] as { 'QUERY PLAN': Array<{ Plan: PlanNode }> })['QUERY PLAN'][0]!.Plan
  }

  async openBatch (batchId: string, totalEntries: number, now: number): Promise<PopulateBatch> {
    await this.pool.query(`INSERT INTO populate_batches (batch_id, total_entries, created_at)
      VALUES ($1, $2, $3) ON CONFLICT (batch_id) DO NOTHING`, [batchId, totalEntries, now])
    const { rows } = await this.pool.query<PopulateBatch>(`SELECT batch_id, total_entries, entries_done, failure_count, failed_ids
      FROM populate_batches WHERE batch_id = $1`, [batchId])
    return rows[0] as PopulateBatch
  }

  async populateChunk (batch: PopulateBatch, orders: NewOrder[], now: number, availableAt: number): Promise<PopulateBatch> {
    return this.transaction(async (tx, delta, log) => {
      // First, so that a second call on the same batch waits for this row and then finds it moved, before inserting anything.
      const { rowCount } = await tx.query('UPDATE populate_batches SET entries_done = $1 WHERE batch_id = $2 AND entries_done = $3',
        [batch.entries_done + orders.length, batch.batch_id, batch.entries_done])
      if (rowCount !== 1) throw new BatchConflictError(batch.batch_id)
      const existing = await this.insertMany(tx, orders, now, availableAt, delta, log)
      const next = advanced(batch, orders.length, existing)
      if (existing.length > 0) {
        await tx.query('UPDATE populate_batches SET failure_count = $1, failed_ids = $2 WHERE batch_id = $3',
          [next.failure_count, next.failed_ids, batch.batch_id])
      }
      return next
    })
  }

  async cursorKey (): Promise<string> {
    const { rows } = await this.pool.query<{ value: string }>("SELECT value FROM service_keys WHERE name = 'cursor'")
    return (rows[0] as { value: string }).value
  }

  // A write, not SELECT 1: a server that is reachable but read-only (a standby, a full disk) is not
  // ready, nor is one where a write to orders would wait (a lock held on the table); the deadline
  // ends a check stuck behind a lock.
  async ping (now: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.query('LOCK TABLE orders IN ROW EXCLUSIVE MODE')
      const { rowCount } = await tx.query('UPDATE readiness_checks SET checked_at = $1 WHERE id = 1', [now])
      if (rowCount !== 1) throw new Error('readiness_checks has no row to write')
    })
  }

  async notificationQueueUsage (): Promise<number> {
    const { rows } = await this.pool.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage')
    return (rows[0] as { usage: number }).usage
  }

  onWork (listener: WorkListener): () => void {
    return this.workListeners.add(listener)
  }

  onChanges (listener: ChangeListener, statuses: readonly OrderStatus[] = ORDER_STATUSES): () => void {
    return this.changeListeners.add(listener, statuses)
  }

  async close (): Promise<void> {
    if (this.pool.ending) return
    // Closing waits for the server to see each connection end; one that stops answering never
    // does, and would hold a shutdown up: past the deadline the process may exit regardless.
    await Promise.race([
      Promise.all([this.listener.close(), this.pool.end()]),
      sleep(this.timeoutMs, undefined, { ref: false })
    ])
  }
}

function claimQuery (limit: number, now: number, leaseMs: number, token: string): pg.QueryConfig {
  return {
    text: `UPDATE orders o SET status = 'Processing', claim_token = $1, lease_until = ${DATABASE_NOW_MS} + $2, attempts = o.attempts + 1,
        processing_started_at = COALESCE(o.processing_started_at, $3), updated_at = $3
      FROM (SELECT seq FROM orders WHERE status = 'Pending' AND available_at <= $3
            ORDER BY available_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED) picked
      WHERE o.seq = picked.seq
      RETURNING o.order_id, o.attempts, o.created_at, o.processing_started_at`,
    values: [token, leaseMs, now, limit]
  }
}

const NEXT_AVAILABLE = "SELECT MIN(available_at) AS at FROM orders WHERE status = 'Pending'"

/** A keyset range over orders_by_status, as listQuery explains; one more id than the limit tells whether more follow. */
function idsQuery (status: OrderStatus, limit: number, after: number): pg.QueryConfig {
  return {
    text: 'SELECT seq, order_id FROM orders WHERE (status, seq) > ($1, $2) AND status <= $1 ORDER BY status, seq LIMIT $3',
    values: [status, after, limit + 1]
  }
}

function indexedQuery (call: IndexedCall): pg.QueryConfig {
  switch (call[0]) {
    case 'list': return listQuery(call[1])
    case 'idsByStatus': return idsQuery(call[1], call[2], call[3] ?? 0)
    case 'claim': return claimQuery(call[1], call[2], call[3], 'a token')
    case 'nextAvailableAt': return { text: NEXT_AVAILABLE }
  }
}
