import { randomInt, randomUUID } from 'node:crypto'
import pg from 'pg'
import type { NewOrder, OrderRecord, OrderStatus } from '../../order.ts'
import { ORDER_STATUSES, sameOrder, toCents } from '../../order.ts'
import { GroupCommit, type Settled } from '../group-commit.ts'
import { migrate } from './migrations.ts'
import { PgListener } from './listener.ts'
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

const CHANNEL = 'orders_available'
const CHANGES_CHANNEL = 'order_changes'
/** Changes per NOTIFY: a payload must stay under PostgreSQL's 8000 bytes. */
const CHANGES_PER_NOTIFY = 80
/** The columns of a ChangedRow, returned by every statement that changes a status. */
const CHANGED_COLUMNS = 'o.order_id, o.attempts, o.created_at, o.processing_started_at'
/** A readiness check slower than this fails: the store is not ready. */
const READINESS_TIMEOUT_MS = 2000
/** Counter shards: each process writes one, picked at random, so that no single row is hot. */
const STAT_SHARDS = 64

const ORDER_COLUMNS = `seq, order_id, user_id, item_ids, total_cents, status, created_at,
  processing_started_at, completed_at, updated_at, attempts, last_error`

// BIGINT columns hold epoch milliseconds, cents and ids below 2^53: numbers, not strings.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser
}

interface PendingCreate { order: NewOrder, now: number, availableAt: number }

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
  private readonly creates = new GroupCommit<PendingCreate, CreateResult>((items) => this.createBatch(items))
  private readonly listener: PgListener

  private constructor (private readonly pool: pg.Pool, connectionString: string) {
    this.listener = new PgListener(connectionString, {
      [CHANNEL]: (payload) => this.workListeners.emit(Number(payload)),
      [CHANGES_CHANNEL]: (payload) => this.changeListeners.emit(decodeChanges(payload))
    })
  }

  static async open (connectionString: string): Promise<PgStore> {
    const pool = new pg.Pool({ connectionString, types, max: 10 })
    // An idle client that loses its connection must not crash the process; the next query reconnects.
    pool.on('error', () => {})
    await migrate(pool)
    const store = new PgStore(pool, connectionString)
    await store.listener.ready
    return store
  }

  private async transaction<T> (fn: (tx: Tx, delta: StatsDelta, log: ChangeLog) => Promise<T>): Promise<T> {
    const tx = await this.pool.connect()
    let failure: Error | undefined
    // A connection lost between two queries is emitted as an event: without a listener it would
    // crash the process. The next query fails with it instead, and the client is discarded.
    const onLost = (err: Error) => { failure = err }
    tx.on('error', onLost)
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
      throw err
    } finally {
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
    const payloads: string[] = []
    for (let i = 0; i < changes.length; i += CHANGES_PER_NOTIFY) payloads.push(encodeChanges(changes.slice(i, i + CHANGES_PER_NOTIFY)))
    await tx.query('SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload', [CHANGES_CHANNEL, payloads])
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
    })
  }

  async create (order: NewOrder, now: number, availableAt: number): Promise<CreateResult> {
    return this.creates.submit({ order, now, availableAt })
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

  async claim (limit: number, now: number, leaseUntil: number): Promise<Claim[]> {
    const token = randomUUID()
    return this.transaction(async (tx, delta, log) => {
      const { rows } = await tx.query<ClaimedRow>(claimQuery(limit, now, leaseUntil, token))
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

  async recoverExpired (now: number, maxAttempts: number): Promise<number> {
    return this.transaction(async (tx, delta, log) => {
      const failed = (await tx.query<ChangedRow>(`UPDATE orders o SET status = 'Failed', updated_at = $1,
          last_error = 'lease expired on the last attempt', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < $1 AND attempts >= $2 RETURNING ${CHANGED_COLUMNS}`, [now, maxAttempts])).rows
      const retried = (await tx.query<ChangedRow>(`UPDATE orders o SET status = 'Pending', available_at = $1, updated_at = $1,
          last_error = 'lease expired', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < $1 RETURNING ${CHANGED_COLUMNS}`, [now])).rows
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

  // A write, not SELECT 1: a server that is reachable but read-only (a standby, a full disk) is not ready.
  // The time limit keeps a check stuck behind a lock from holding a pooled connection.
  async ping (now: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.query(`SET LOCAL statement_timeout = ${READINESS_TIMEOUT_MS}`)
      const { rowCount } = await tx.query('UPDATE readiness_checks SET checked_at = $1 WHERE id = 1', [now])
      if (rowCount !== 1) throw new Error('readiness_checks has no row to write')
    })
  }

  onWork (listener: WorkListener): () => void {
    return this.workListeners.add(listener)
  }

  onChanges (listener: ChangeListener, statuses: readonly OrderStatus[] = ORDER_STATUSES): () => void {
    return this.changeListeners.add(listener, statuses)
  }

  async close (): Promise<void> {
    if (this.pool.ended) return
    await this.listener.close()
    await this.pool.end()
  }
}

function claimQuery (limit: number, now: number, leaseUntil: number, token: string): pg.QueryConfig {
  return {
    text: `UPDATE orders o SET status = 'Processing', claim_token = $1, lease_until = $2, attempts = o.attempts + 1,
        processing_started_at = COALESCE(o.processing_started_at, $3), updated_at = $3
      FROM (SELECT seq FROM orders WHERE status = 'Pending' AND available_at <= $3
            ORDER BY available_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED) picked
      WHERE o.seq = picked.seq
      RETURNING o.order_id, o.attempts, o.created_at, o.processing_started_at`,
    values: [token, leaseUntil, now, limit]
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

/** Compact rows keep a NOTIFY payload small: [order_id, status, at, attempts, created_at, processing_started_at]. */
function encodeChanges (changes: OrderChange[]): string {
  return JSON.stringify(changes.map((c) => [c.order_id, c.status, c.at, c.attempts, c.created_at, c.processing_started_at]))
}

function decodeChanges (payload: string): OrderChange[] {
  return (JSON.parse(payload) as Array<[string, OrderStatus, number, number, number, number | null]>)
    .map(([orderId, status, at, attempts, createdAt, startedAt]) =>
      ({ order_id: orderId, status, at, attempts, created_at: createdAt, processing_started_at: startedAt }))
}
