import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import type { NewOrder, OrderRecord, OrderStatus } from '../../order.ts'
import { ORDER_STATUSES, sameOrder, toCents } from '../../order.ts'
import { GroupCommit, attempt, type Settled } from '../group-commit.ts'
import { Checkpointer } from './checkpointer.ts'
import { migrate } from './migrations.ts'
import { StatsDelta, statsFromRows } from '../stats-delta.ts'
import type {
  CancelResult, ChangeListener, Claim, CreateResult, IdPage, IndexedCall, ListQuery, OrderPage, OrderStats, OrderStore, Outcome,
  PopulateBatch, WorkListener
} from '../order-store.ts'
import { advanced } from '../populate-batches.ts'
import { ORDER_OTHER_BYTES, PAGE_BYTES } from '../page-size.ts'
import { BatchConflictError } from '../store-errors.ts'
import { Listeners } from '../listeners.ts'
import { ChangeListeners, ChangeLog, type ChangedRow } from '../change-log.ts'
import { recordClaims, recordReleases, type ClaimedRow } from '../claimed-rows.ts'

const CHECKPOINT_INTERVAL_MS = 100

/** One write; its changes to the aggregates go into the batch's StatsDelta. */
type Write<O> = (delta: StatsDelta, log: ChangeLog) => O

/** A write of a batch written without savepoints failed: it may have left some of its statements' changes. */
class FailedHalfway extends Error {}

interface OrderRow extends Omit<OrderRecord, 'item_ids'> { item_ids: string }

/** A statement and the parameters one call binds to it. */
type Query = [Database.Statement, unknown[] | Record<string, unknown>]

/** The columns of a ChangedRow, returned by every statement that changes a status. */
const CHANGED_COLUMNS = 'order_id, attempts, created_at, processing_started_at'

const ORDER_COLUMNS = `seq, order_id, user_id, item_ids, total_cents, status, created_at,
  processing_started_at, completed_at, updated_at, attempts, last_error`

function toRecord (row: OrderRow): OrderRecord {
  return { ...row, item_ids: JSON.parse(row.item_ids) as number[] }
}

/** About the bytes of an order's JSON: item_ids is stored as the JSON it is sent as. */
function jsonBytes (row: OrderRow): number {
  return ORDER_OTHER_BYTES + row.order_id.length + row.item_ids.length + (row.last_error === null ? 0 : Buffer.byteLength(row.last_error))
}

/**
 * Each read that must cost its limit whatever the data names its index (lists here; claims, id lists
 * and the next claimable time in their statements): SQLite advises INDEXED BY for time-critical
 * queries, and without statistics it picked an index that covers one filter (or, for claims, the
 * status index plus a sort) and walked it: 100-200 ms for one status or user of a million orders.
 * A schema change that loses the index then fails loudly instead of slowly.
 */
function listIndex (byStatus: boolean, byUser: boolean): string {
  if (byStatus && byUser) return 'INDEXED BY orders_by_status_user'
  if (byStatus) return 'INDEXED BY orders_by_status'
  if (byUser) return 'INDEXED BY orders_by_user'
  return 'NOT INDEXED' // the rowid, which is seq
}

/** The embedded store: one SQLite file (WAL) or `:memory:`, used by one process. */
export class SqliteStore implements OrderStore {
  private readonly db: Database.Database
  private readonly workListeners = new Listeners<number>()
  private readonly changeListeners = new ChangeListeners()
  private readonly sql
  private readonly writes: GroupCommit<Write<unknown>, unknown>
  /** Runs a function in a transaction, or in a savepoint inside the current one. */
  private readonly atomically: <T>(fn: () => T) => T
  private readonly listStatements = new Map<string, Database.Statement>()
  private readonly checkpointer: Checkpointer | undefined

  /** `busyTimeoutMs`: how long a write waits for another connection's lock (blocking the event loop) before failing. */
  constructor (path: string, busyTimeoutMs = 1000) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path)
    // Takes effect only for a new database: 8 KiB pages measured ~20% faster on bulk inserts than 4 KiB.
    this.db.pragma('page_size = 8192')
    this.db.pragma('journal_mode = WAL')
    // WAL with synchronous=NORMAL survives a process crash; only an OS crash can lose the last commits.
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma(`busy_timeout = ${busyTimeoutMs}`)
    if (path !== ':memory:') {
      // Checkpoints run in a worker; this one only steps in if the WAL ever grows past ~80 MB.
      this.db.pragma('wal_autocheckpoint = 10000')
      this.checkpointer = new Checkpointer(path, CHECKPOINT_INTERVAL_MS, (message) => { console.error(`checkpoint failed: ${message}`) })
    }
    migrate(this.db)
    const db = this.db
    this.sql = {
      insert: db.prepare(`INSERT INTO orders
        (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
        VALUES (?, ?, ?, ?, 'Pending', ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`),
      get: db.prepare(`SELECT ${ORDER_COLUMNS} FROM orders WHERE order_id = ?`),
      addStat: db.prepare('UPDATE order_stats SET value = value + ? WHERE name = ?'),
      stats: db.prepare('SELECT name, value FROM order_stats'),
      cancel: db.prepare(`UPDATE orders SET status = 'Cancelled', updated_at = ?
        WHERE order_id = ? AND status = 'Pending' RETURNING ${ORDER_COLUMNS}`),
      claim: db.prepare(`UPDATE orders SET status = 'Processing', claim_token = ?, lease_until = ?,
          attempts = attempts + 1, processing_started_at = COALESCE(processing_started_at, ?), updated_at = ?
        WHERE seq IN (SELECT seq FROM orders INDEXED BY orders_claimable WHERE status = 'Pending' AND available_at <= ?
          ORDER BY available_at, seq LIMIT ?)
        RETURNING order_id, attempts, created_at, processing_started_at`),
      complete: db.prepare(`UPDATE orders SET status = 'Completed', completed_at = ?, updated_at = ?,
          claim_token = NULL, lease_until = NULL, last_error = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'
        RETURNING ${CHANGED_COLUMNS}`),
      retry: db.prepare(`UPDATE orders SET status = 'Pending', available_at = ?, updated_at = ?,
          last_error = ?, claim_token = NULL, lease_until = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'
        RETURNING ${CHANGED_COLUMNS}`),
      fail: db.prepare(`UPDATE orders SET status = 'Failed', updated_at = ?, last_error = ?,
          claim_token = NULL, lease_until = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'
        RETURNING ${CHANGED_COLUMNS}`),
      claimed: db.prepare(`SELECT created_at, processing_started_at, attempts FROM orders
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'`),
      // A handed-back claim was no attempt: it is undone, and the first one un-starts the order.
      release: db.prepare(`UPDATE orders SET status = 'Pending', available_at = ?, updated_at = ?,
          claim_token = NULL, lease_until = NULL, attempts = attempts - 1,
          processing_started_at = CASE WHEN attempts = 1 THEN NULL ELSE processing_started_at END
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'`),
      // The held tokens come as one JSON array: a statement has a fixed number of parameters.
      failExpired: db.prepare(`UPDATE orders SET status = 'Failed', updated_at = @now,
          last_error = 'lease expired on the last attempt', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < @now AND attempts >= @maxAttempts
          AND claim_token NOT IN (SELECT value FROM json_each(@held))
        RETURNING ${CHANGED_COLUMNS}`),
      retryExpired: db.prepare(`UPDATE orders SET status = 'Pending', available_at = @now, updated_at = @now,
          last_error = 'lease expired', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < @now AND claim_token NOT IN (SELECT value FROM json_each(@held))
        RETURNING ${CHANGED_COLUMNS}`),
      nextAvailable: db.prepare("SELECT MIN(available_at) AS at FROM orders INDEXED BY orders_claimable WHERE status = 'Pending'").pluck(),
      idsByStatus: db.prepare(`SELECT seq, order_id FROM orders INDEXED BY orders_by_status
        WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?`),
      openBatch: db.prepare(`INSERT INTO populate_batches (batch_id, total_entries, created_at)
        VALUES (?, ?, ?) ON CONFLICT (batch_id) DO NOTHING`),
      batch: db.prepare('SELECT batch_id, total_entries, entries_done, failure_count, failed_ids FROM populate_batches WHERE batch_id = ?'),
      advanceBatch: db.prepare('UPDATE populate_batches SET entries_done = ? WHERE batch_id = ? AND entries_done = ?'),
      batchFailures: db.prepare('UPDATE populate_batches SET failure_count = ?, failed_ids = ? WHERE batch_id = ?'),
      cursorKey: db.prepare("SELECT value FROM service_keys WHERE name = 'cursor'").pluck(),
      readinessCheck: db.prepare('UPDATE readiness_checks SET checked_at = ? WHERE id = 1')
    }
    // better-sqlite3 runs a transaction function called inside another in a savepoint.
    this.atomically = db.transaction((fn: () => unknown) => fn()) as <T>(fn: () => T) => T
    this.writes = new GroupCommit((writes) => this.commit(writes))
  }

  private apply (delta: StatsDelta): void {
    for (const [name, amount] of delta.changes) this.sql.addStat.run(amount, name)
  }

  /** Runs `fn` inside the transaction that commits every write of this event-loop turn. */
  private write<O> (fn: Write<O>): Promise<O> {
    return this.writes.submit(fn as Write<unknown>) as Promise<O>
  }

  /** Writes one batch in one transaction, then announces its status changes. */
  private commit (writes: Array<Write<unknown>>): Array<Settled<unknown>> {
    let log = new ChangeLog(this.changeListeners.wanted)
    let results: Array<Settled<unknown>>
    try {
      results = this.atomically(() => this.writeBatch(writes, log, false))
    } catch (err) {
      if (!(err instanceof FailedHalfway)) throw err
      log = new ChangeLog(this.changeListeners.wanted)
      results = this.atomically(() => this.writeBatch(writes, log, true))
    }
    if (log.changes.length > 0) this.changeListeners.emit(log.changes)
    return results
  }

  /**
   * Runs the writes of a batch in the current transaction. A write that throws may already have run
   * some of its statements: with `savepoints`, each write runs in one of its own and its aggregates and
   * log count only if it succeeds. Without (the usual case: a savepoint per write measured +2 us, +60%
   * on a one-row insert) a failure throws FailedHalfway: the batch is rolled back and written again
   * with them. So a write must change nothing but the database, its delta and its log: it may run twice.
   */
  private writeBatch (writes: Array<Write<unknown>>, log: ChangeLog, savepoints: boolean): Array<Settled<unknown>> {
    const delta = new StatsDelta()
    const results = writes.map((fn) => {
      const result = savepoints ? this.writeInSavepoint(fn, delta, log) : attempt(() => fn(delta, log))
      if (!result.ok) {
        // Some failures (a full disk while spilling the cache, I/O) make SQLite roll back the whole
        // transaction: then the batch has failed as one, and the rest must not run outside it.
        if (!this.db.inTransaction) throw result.error
        if (!savepoints) throw new FailedHalfway()
      }
      return result
    })
    this.apply(delta)
    return results
  }

  private writeInSavepoint (fn: Write<unknown>, delta: StatsDelta, log: ChangeLog): Settled<unknown> {
    const ownDelta = new StatsDelta()
    const ownLog = new ChangeLog(log.wanted)
    const result = attempt(() => this.atomically(() => fn(ownDelta, ownLog)))
    if (result.ok) {
      delta.merge(ownDelta)
      log.append(ownLog)
    }
    return result
  }

  private insert (order: NewOrder, now: number, availableAt: number): boolean {
    return this.sql.insert.run(order.order_id, order.user_id, JSON.stringify(order.item_ids),
      toCents(order.total_amount), now, availableAt, now).changes === 1
  }

  async create (order: NewOrder, now: number, availableAt: number): Promise<CreateResult> {
    const result = await this.write((delta, log): CreateResult => {
      if (this.insert(order, now, availableAt)) {
        delta.add('Pending', 1)
        log.created(order.order_id, now)
        return 'created'
      }
      return sameOrder(this.getSync(order.order_id) as OrderRecord, order) ? 'exists' : 'conflict'
    })
    if (result === 'created') this.workListeners.emit(availableAt)
    return result
  }

  async createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]> {
    const existing = await this.write((delta, log) => this.insertMany(orders, now, availableAt, delta, log))
    if (existing.length < orders.length) this.workListeners.emit(availableAt)
    return existing
  }

  /** Inserts orders in the current transaction; returns the ids that already existed. */
  private insertMany (orders: NewOrder[], now: number, availableAt: number, delta: StatsDelta, log: ChangeLog): string[] {
    const existing: string[] = []
    for (const order of orders) {
      if (this.insert(order, now, availableAt)) log.created(order.order_id, now)
      else existing.push(order.order_id)
    }
    delta.add('Pending', orders.length - existing.length)
    return existing
  }

  private getSync (orderId: string): OrderRecord | undefined {
    const row = this.sql.get.get(orderId) as OrderRow | undefined
    return row && toRecord(row)
  }

  async get (orderId: string): Promise<OrderRecord | undefined> {
    return this.getSync(orderId)
  }

  /** Rows are read one at a time: a page ends before the order that would take it past PAGE_BYTES, without reading the rest. */
  async list (query: ListQuery): Promise<OrderPage> {
    const [statement, params] = this.listQuery(query)
    const orders: OrderRecord[] = []
    let bytes = 0
    for (const row of statement.iterate(params) as IterableIterator<OrderRow>) {
      const size = jsonBytes(row)
      if (orders.length === query.limit || (orders.length > 0 && bytes + size > PAGE_BYTES)) {
        return { orders, lastSeq: (orders.at(-1) as OrderRecord).seq }
      }
      bytes += size
      orders.push(toRecord(row))
    }
    return { orders, lastSeq: null }
  }

  /** One more order than the limit is read, to tell whether another page follows. */
  private listQuery ({ status, userId, limit, after = 0 }: ListQuery): Query {
    const byStatus = status !== undefined
    const byUser = userId !== undefined
    const key = `${byStatus}:${byUser}`
    let statement = this.listStatements.get(key)
    if (!statement) {
      const where = ['seq > @after']
      if (byStatus) where.push('status = @status')
      if (byUser) where.push('user_id = @userId')
      statement = this.db.prepare(`SELECT ${ORDER_COLUMNS} FROM orders ${listIndex(byStatus, byUser)}
        WHERE ${where.join(' AND ')} ORDER BY seq LIMIT @limit`)
      this.listStatements.set(key, statement)
    }
    return [statement, { after, status, userId, limit: limit + 1 }]
  }

  async cancel (orderId: string, now: number): Promise<CancelResult> {
    return this.write((delta, log): CancelResult => {
      const row = this.sql.cancel.get(now, orderId) as OrderRow | undefined
      if (!row) return { cancelled: false, order: this.getSync(orderId) }
      delta.move('Pending', 'Cancelled')
      log.add(row, 'Cancelled', now)
      return { cancelled: true, order: toRecord(row) }
    })
  }

  // One process uses the file: its clock is the store's.
  async claim (limit: number, now: number, leaseMs: number): Promise<Claim[]> {
    return this.write((delta, log) => {
      const token = randomUUID()
      const [statement, params] = this.claimQuery(limit, now, leaseMs, token)
      return recordClaims(statement.all(params) as ClaimedRow[], token, now, delta, log)
    })
  }

  private claimQuery (limit: number, now: number, leaseMs: number, token: string): Query {
    return [this.sql.claim, [token, now + leaseMs, now, now, now, limit]]
  }

  async settle (outcomes: Outcome[], now: number): Promise<number> {
    const applied = await this.write((delta, log) => {
      let applied = 0
      for (const outcome of outcomes) {
        const { order_id: orderId, token } = outcome.claim
        if (outcome.ok) {
          const done = this.sql.complete.get(now, now, orderId, token) as ChangedRow | undefined
          if (done) { delta.completed({ ...done, completed_at: now }); log.add(done, 'Completed', now); applied++ }
        } else if (outcome.retryAt !== null) {
          const retried = this.sql.retry.get(outcome.retryAt, now, outcome.error, orderId, token) as ChangedRow | undefined
          if (retried) { delta.move('Processing', 'Pending'); log.add(retried, 'Pending', now); applied++ }
        } else {
          const failed = this.sql.fail.get(now, outcome.error, orderId, token) as ChangedRow | undefined
          if (failed) { delta.move('Processing', 'Failed'); log.add(failed, 'Failed', now); applied++ }
        }
      }
      return applied
    })
    const retryAt = outcomes.reduce((at, o) => (!o.ok && o.retryAt !== null ? Math.min(at, o.retryAt) : at), Infinity)
    if (retryAt !== Infinity) this.workListeners.emit(retryAt)
    return applied
  }

  async release (claims: Claim[], now: number): Promise<number> {
    const released = await this.write((delta, log) => {
      const held: ClaimedRow[] = []
      for (const { order_id: orderId, token } of claims) {
        const row = this.sql.claimed.get(orderId, token) as Omit<ClaimedRow, 'order_id'> | undefined
        if (!row) continue
        this.sql.release.run(now, now, orderId, token)
        held.push({ ...row, order_id: orderId })
      }
      return recordReleases(held, now, delta, log)
    })
    if (released > 0) this.workListeners.emit(now)
    return released
  }

  async recoverExpired (now: number, maxAttempts: number, heldTokens: readonly string[]): Promise<number> {
    const held = JSON.stringify(heldTokens)
    const recovered = await this.write((delta, log) => {
      const failed = this.sql.failExpired.all({ now, maxAttempts, held }) as ChangedRow[]
      const retried = this.sql.retryExpired.all({ now, held }) as ChangedRow[]
      delta.move('Processing', 'Failed', failed.length).move('Processing', 'Pending', retried.length)
      for (const row of failed) log.add(row, 'Failed', now)
      for (const row of retried) log.add(row, 'Pending', now)
      return failed.length + retried.length
    })
    if (recovered > 0) this.workListeners.emit(now)
    return recovered
  }

  async openBatch (batchId: string, totalEntries: number, now: number): Promise<PopulateBatch> {
    return this.write(() => {
      this.sql.openBatch.run(batchId, totalEntries, now)
      const row = this.sql.batch.get(batchId) as Omit<PopulateBatch, 'failed_ids'> & { failed_ids: string }
      return { ...row, failed_ids: JSON.parse(row.failed_ids) as string[] }
    })
  }

  async populateChunk (batch: PopulateBatch, orders: NewOrder[], now: number, availableAt: number): Promise<PopulateBatch> {
    const next = await this.write((delta, log) => {
      if (this.sql.advanceBatch.run(batch.entries_done + orders.length, batch.batch_id, batch.entries_done).changes !== 1) {
        throw new BatchConflictError(batch.batch_id)
      }
      const existing = this.insertMany(orders, now, availableAt, delta, log)
      const next = advanced(batch, orders.length, existing)
      if (existing.length > 0) this.sql.batchFailures.run(next.failure_count, JSON.stringify(next.failed_ids), batch.batch_id)
      return next
    })
    if (next.failure_count - batch.failure_count < orders.length) this.workListeners.emit(availableAt)
    return next
  }

  async nextAvailableAt (): Promise<number | null> {
    return this.sql.nextAvailable.get() as number | null
  }

  async stats (): Promise<OrderStats> {
    return statsFromRows(this.sql.stats.all() as Array<{ name: string, value: number }>)
  }

  async idsByStatus (status: OrderStatus, limit: number, after = 0): Promise<IdPage> {
    const [statement, params] = this.idsQuery(status, limit, after)
    const rows = statement.all(params) as Array<{ seq: number, order_id: string }>
    const listed = rows.slice(0, limit)
    return { ids: listed.map((row) => row.order_id), lastSeq: rows.length > limit ? (listed.at(-1) as { seq: number }).seq : null }
  }

  /** One more id than the limit is read, to tell whether more follow. */
  private idsQuery (status: OrderStatus, limit: number, after: number): Query {
    return [this.sql.idsByStatus, [status, after, limit + 1]]
  }

  /** The plan SQLite picks for what a call runs (EXPLAIN QUERY PLAN), one line per step. */
  explain (...call: IndexedCall): string[] {
    const [statement, params] = this.query(call)
    return (this.db.prepare(`EXPLAIN QUERY PLAN ${statement.source}`).all(params) as Array<{ detail: string }>).map((row) => row.detail)
  }

  private query (call: IndexedCall): Query {
    switch (call[0]) {
      case 'list': return this.listQuery(call[1])
      case 'idsByStatus': return this.idsQuery(call[1], call[2], call[3] ?? 0)
      case 'claim': return this.claimQuery(call[1], call[2], call[3], 'a token')
      case 'nextAvailableAt': return [this.sql.nextAvailable, []]
    }
  }

  async cursorKey (): Promise<string> {
    return this.sql.cursorKey.get() as string
  }

  // Goes through the same commit as orders, so it fails exactly when they would: locked, read-only, disk full.
  async ping (now: number): Promise<void> {
    await this.write(() => this.sql.readinessCheck.run(now))
  }

  onWork (listener: WorkListener): () => void {
    return this.workListeners.add(listener)
  }

  onChanges (listener: ChangeListener, statuses: readonly OrderStatus[] = ORDER_STATUSES): () => void {
    return this.changeListeners.add(listener, statuses)
  }

  async close (): Promise<void> {
    await this.checkpointer?.close()
    if (this.db.open) this.db.close()
  }
}
