import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import type { NewOrder, OrderRecord, OrderStatus } from '../../order.ts'
import { sameOrder, toCents } from '../../order.ts'
import { GroupCommit, attempt, type Settled } from '../group-commit.ts'
import { Checkpointer } from './checkpointer.ts'
import type { BatchSweeper } from '../batch-sweeper.ts'
import { migrate, ORDERS_FINISHED_INDEX } from './migrations.ts'
import { applyDelta, statsFromRows } from '../stats-delta.ts'
import type {
  CancelResult, Claim, CreateResult, DeleteReason, DeleteResult, FinishedStatus, IdPage, IndexedCall, ListQuery, OrderPage, OrderStats, OrderStore, Outcome,
  Overview, PopulateBatch, ProcessingState, RetriedChunk, RetryResult
} from '../order-store.ts'
import { keysetStart } from '../order-store.ts'
import { advanced } from '../populate-batches.ts'
import { ORDER_OTHER_BYTES, PAGE_BYTES } from '../page-size.ts'
import { BatchConflictError } from '../store-errors.ts'
import { StoreEvents } from '../store-events.ts'
import type { ChangedRow } from '../change-log.ts'
import { claimsOf, Transitions, type ClaimedRow, type DeletedRow, type QueuedRow } from '../transitions.ts'
import { listSql, SQL, SWEEP_ORDERS } from './statements.ts'
import { SqliteWebhooks } from './sqlite-webhooks.ts'
import { tracingOn } from '../../tracing.ts'
import {
  DEFAULT_CIRCUIT, purgeSweeper, type DeliveryClaim, type DeliveryOutcome, type DeliveryPage, type DeliveryQuery, type EndpointCap, type EndpointRecord, type NewDelivery, type NewEndpoint
} from '../webhook-store.ts'

const CHECKPOINT_INTERVAL_MS = 100
/** Orders GET reads kept in memory: ~60 MB at most with their JSON (routes/orders.ts), for 100,000 orders read at random. */
const RECORD_CACHE_SIZE = 100_000

/** One write; what its status changes do besides their SQL goes into the batch's Transitions. */
type Write<O> = (transitions: Transitions) => O

/** A write of a batch written without savepoints failed: it may have left some of its statements' changes. */
class FailedHalfway extends Error {}

interface OrderRow extends Omit<OrderRecord, 'item_ids'> { item_ids: string }

/** A statement and the parameters one call binds to it. */
type Query = [Database.Statement, unknown[] | Record<string, unknown>]

function toRecord (row: OrderRow): OrderRecord {
  return { ...row, item_ids: JSON.parse(row.item_ids) as number[] }
}

/**
 * An order read raw, as an array in the order of ORDER_COLUMNS (statements.ts). Claims that bring
 * their orders read them so: 1,000 rows as objects of 13 columns took 5.0 ms, as arrays 3.7 ms
 * (the narrow claim's 4 columns: 3.3 ms).
 */
function recordFromColumns (columns: unknown[]): OrderRecord {
  const [seq, orderId, userId, itemIds, totalCents, status, createdAt, startedAt, completedAt, updatedAt, attempts, lastError, result] = columns
  return {
    seq: seq as number,
    order_id: orderId as string,
    user_id: userId as number,
    item_ids: JSON.parse(itemIds as string) as number[],
    total_cents: totalCents as number,
    status: status as OrderStatus,
    created_at: createdAt as number,
    processing_started_at: startedAt as number | null,
    completed_at: completedAt as number | null,
    updated_at: updatedAt as number,
    attempts: attempts as number,
    last_error: lastError as string | null,
    result: result as string | null
  }
}

/** About the bytes of an order's JSON: item_ids and result are stored as the JSON they are sent as. */
function jsonBytes (row: OrderRow): number {
  return ORDER_OTHER_BYTES + row.order_id.length + row.item_ids.length + (row.last_error === null ? 0 : Buffer.byteLength(row.last_error)) +
    (row.result === null ? 0 : Buffer.byteLength(row.result))
}

/** The embedded store: one SQLite file (WAL) or `:memory:`, used by one process. */
export class SqliteStore extends StoreEvents implements OrderStore {
  private readonly db: Database.Database
  private readonly sql: Record<keyof typeof SQL, Database.Statement>
  private readonly writes: GroupCommit<Write<unknown>, unknown>
  /** Runs a function in a transaction, or in a savepoint inside the current one. */
  private readonly atomically: <T>(fn: () => T) => T
  private readonly listStatements = new Map<string, Database.Statement>()
  private readonly checkpointer: Checkpointer | undefined
  private readonly purges: BatchSweeper
  private readonly webhooks: SqliteWebhooks
  private readonly path: string
  /**
   * What reads would otherwise ask SQLite for, kept in memory: the store is the file's only writer,
   * and each commit updates them before anything else runs. The aggregates and the processing state
   * for /orders/metrics (a read went from ~66 to ~48 us of CPU), and up to RECORD_CACHE_SIZE orders as GET
   * reads them (a point read costs ~20 us between requests), frozen: a caller may keep what it
   * derives from one until a change replaces it (routes/orders.ts keeps its JSON).
   */
  private readonly memory: { stats: OrderStats, processing: ProcessingState, records: Map<string, OrderRecord> }
  /** The statuses whose changes someone listens for or some endpoint wants, and the two sets it was made of. */
  private wanted: { statuses: ReadonlySet<OrderStatus>, listened: ReadonlySet<OrderStatus>, subscribed: ReadonlySet<OrderStatus> } | null = null

  /** Retention's sweeps of orders, prepared on first use (orders_finished may be absent). */
  private readonly sweeps = new Map<FinishedStatus, Database.Statement>()

  /**
   * `busyTimeoutMs`: how long a write waits for another connection's lock (blocking the event loop)
   * before failing. `ordersFinishedIndex`: whether retention's index of finished orders is kept
   * (built if absent) or dropped: each order entering it costs ~8,300 instructions as it finishes,
   * ~4% of the end-to-end CPU, for sweeps that only a retention of orders runs.
   */
  constructor (path: string, busyTimeoutMs = 1000, { ordersFinishedIndex = true } = {}) {
    super()
    this.path = path
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path)
    // Takes effect only for a new database: 8 KiB pages measured ~20% faster on bulk inserts than 4 KiB.
    this.db.pragma('page_size = 8192')
    this.db.pragma('journal_mode = WAL')
    // WAL with synchronous=NORMAL survives a process crash; only an OS crash can lose the last commits.
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma(`busy_timeout = ${busyTimeoutMs}`)
    // What a delete or an update frees inside a page is overwritten with zeros (no more I/O): the
    // older versions a claim or a settle leaves of a row are not left readable. An erasure zeroes
    // the pages it frees too (deleted()).
    this.db.pragma('secure_delete = FAST')
    if (path !== ':memory:') {
      // Checkpoints run in a worker; this one only steps in if the WAL ever grows past ~80 MB.
      this.db.pragma('wal_autocheckpoint = 10000')
      this.checkpointer = new Checkpointer(path, CHECKPOINT_INTERVAL_MS, (message) => { console.error(`checkpoint failed: ${message}`) })
    }
    migrate(this.db)
    this.db.exec(ordersFinishedIndex ? ORDERS_FINISHED_INDEX : 'DROP INDEX IF EXISTS orders_finished')
    const db = this.db
    this.sql = Object.fromEntries(Object.entries(SQL).map(([name, text]) => [name, db.prepare(text)])) as Record<keyof typeof SQL, Database.Statement>
    this.sql.claimOrders.raw(true)
    this.sql.claimOrdersTraced.raw(true)
    // better-sqlite3 runs a transaction function called inside another in a savepoint.
    this.atomically = db.transaction((fn: () => unknown) => fn()) as <T>(fn: () => T) => T
    this.writes = new GroupCommit((writes) => this.commit(writes))
    this.webhooks = new SqliteWebhooks(this.sql, (orderId) => this.getSync(orderId))
    this.memory = {
      stats: statsFromRows(this.sql.stats.all() as Array<{ name: string, value: number }>),
      processing: this.sql.processingState.get() as ProcessingState,
      records: new Map()
    }
    this.purges = purgeSweeper(this, (err) => { console.error(`removing a deleted webhook endpoint's deliveries failed: ${(err as Error).message}`) })
    // A removal cut short by a crash or a stop is finished.
    this.purges.wake()
  }

  /** Changes to these statuses are kept: listeners or endpoints want them; others cost nothing. */
  private wantedStatuses (): ReadonlySet<OrderStatus> {
    const listened = this.changeListeners.wanted
    const subscribed = this.webhooks.subscriptions.statuses
    if (this.wanted?.listened !== listened || this.wanted.subscribed !== subscribed) {
      this.wanted = { statuses: new Set([...listened, ...subscribed]), listened, subscribed }
    }
    return this.wanted.statuses
  }

  /** Runs `fn` inside the transaction that commits every write of this event-loop turn. */
  private write<O> (fn: Write<O>): Promise<O> {
    return this.writes.submit(fn as Write<unknown>) as Promise<O>
  }

  /** Writes one batch in one transaction, then announces its status changes and the work it made claimable. */
  private commit (writes: Array<Write<unknown>>): Array<Settled<unknown>> {
    const wanted = this.wantedStatuses()
    let transitions = new Transitions(wanted)
    let results: Array<Settled<unknown>>
    try {
      results = this.atomically(() => this.writeBatch(writes, transitions, false))
    } catch (err) {
      if (!(err instanceof FailedHalfway)) throw err
      transitions = new Transitions(wanted)
      results = this.atomically(() => this.writeBatch(writes, transitions, true))
    }
    applyDelta(this.memory.stats, transitions.delta)
    for (const id of transitions.log.orderIds) this.memory.records.delete(id)
    if (transitions.deliveries.endpointsChanged) {
      this.webhooks.reload()
      this.endpointListeners.emit()
    }
    if (transitions.log.changes.length > 0) this.changeListeners.emit(transitions.log.changes)
    if (transitions.wakeAt !== Infinity) this.workListeners.emit(transitions.wakeAt)
    if (transitions.deliveries.due) this.deliveryListeners.emit()
    return results
  }

  /**
   * Runs the writes of a batch in the current transaction. A write that throws may already have run
   * some of its statements: with `savepoints`, each write runs in one of its own and its transitions
   * count only if it succeeds. Without (the usual case: a savepoint per write measured +2 us, +60%
   * on a one-row insert) a failure throws FailedHalfway: the batch is rolled back and written again
   * with them. So a write must change nothing but the database and its transitions: it may run twice.
   */
  private writeBatch (writes: Array<Write<unknown>>, transitions: Transitions, savepoints: boolean): Array<Settled<unknown>> {
    const now = Date.now()
    let recorded = 0
    const results = writes.map((fn) => {
      const result = savepoints ? this.writeInSavepoint(fn, transitions) : attempt(() => fn(transitions))
      if (!result.ok) {
        // Some failures (a full disk while spilling the cache, I/O) make SQLite roll back the whole
        // transaction: then the batch has failed as one, and the rest must not run outside it.
        if (!this.db.inTransaction) throw result.error
        if (!savepoints) throw new FailedHalfway()
      }
      // Deliveries are recorded with the status changes that make them, in their transaction,
      // each with its order as that write left it.
      recorded = this.webhooks.record(transitions, recorded, now)
      return result
    })
    this.webhooks.finish(transitions)
    for (const [name, amount] of transitions.delta.changes) this.sql.addStat.run(amount, name)
    return results
  }

  private writeInSavepoint (fn: Write<unknown>, transitions: Transitions): Settled<unknown> {
    const own = new Transitions(transitions.log.wanted)
    const result = attempt(() => this.atomically(() => fn(own)))
    if (result.ok) transitions.merge(own)
    return result
  }

  private insert (order: NewOrder, now: number, availableAt: number, traceparent: string | null = null): boolean {
    return this.sql.insert.run(order.order_id, order.user_id, JSON.stringify(order.item_ids),
      toCents(order.total_amount), now, availableAt, now, traceparent).changes === 1
  }

  async create (order: NewOrder, now: number, availableAt: number, traceparent?: string): Promise<CreateResult> {
    return this.write((transitions) => this.createOne(order, now, availableAt, traceparent, transitions))
  }

  async createEach (orders: NewOrder[], now: number, availableAt: number, traceparent?: string): Promise<CreateResult[]> {
    return this.write((transitions) => orders.map((order) => this.createOne(order, now, availableAt, traceparent, transitions)))
  }

  /** Inserts an order in the current transaction, or compares it with the one stored under its id. */
  private createOne (order: NewOrder, now: number, availableAt: number, traceparent: string | undefined, transitions: Transitions): CreateResult {
    if (this.insert(order, now, availableAt, traceparent)) {
      transitions.created([newRow(order.order_id, now, availableAt)])
      return 'created'
    }
    return sameOrder(this.getSync(order.order_id) as OrderRecord, order) ? 'exists' : 'conflict'
  }

  async createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]> {
    return this.write((transitions) => this.insertMany(orders, now, availableAt, transitions))
  }

  /** Inserts orders in the current transaction; returns the ids that already existed. */
  private insertMany (orders: NewOrder[], now: number, availableAt: number, transitions: Transitions): string[] {
    const existing: string[] = []
    const created: QueuedRow[] = []
    for (const order of orders) {
      if (this.insert(order, now, availableAt)) created.push(newRow(order.order_id, now, availableAt))
      else existing.push(order.order_id)
    }
    transitions.created(created)
    return existing
  }

  private getSync (orderId: string): OrderRecord | undefined {
    const row = this.sql.get.get(orderId) as OrderRow | undefined
    return row && toRecord(row)
  }

  async get (orderId: string): Promise<OrderRecord | undefined> {
    const { records } = this.memory
    const kept = records.get(orderId)
    if (kept !== undefined) return kept
    const record = this.getSync(orderId)
    if (record === undefined) return undefined
    Object.freeze(record.item_ids)
    // The oldest read leaves first once it is full: no reordering on each hit.
    if (records.size >= RECORD_CACHE_SIZE) records.delete(records.keys().next().value as string)
    records.set(orderId, Object.freeze(record))
    return record
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

  private listQuery ({ status, userId, limit, order = 'asc', after = keysetStart(order) }: ListQuery): Query {
    const byStatus = status !== undefined
    const byUser = userId !== undefined
    const key = `${byStatus}:${byUser}:${order}`
    let statement = this.listStatements.get(key)
    if (!statement) {
      statement = this.db.prepare(listSql(byStatus, byUser, order))
      this.listStatements.set(key, statement)
    }
    return [statement, { after, status, userId, limit: limit + 1 }]
  }

  async cancel (orderId: string, now: number): Promise<CancelResult> {
    return this.write((transitions): CancelResult => {
      const row = this.sql.cancel.get(now, orderId) as OrderRow | undefined
      if (!row) return { cancelled: false, order: this.getSync(orderId) }
      transitions.cancelled([row], now)
      return { cancelled: true, order: toRecord(row) }
    })
  }

  async retry (orderId: string, now: number): Promise<RetryResult> {
    return this.write((transitions): RetryResult => {
      const failed = this.sql.failed.get(orderId) as ChangedRow | undefined
      if (!failed) return { retried: false, order: this.getSync(orderId) }
      const row = this.sql.requeue.get({ orderId, now }) as OrderRow
      transitions.requeued([failed], now)
      return { retried: true, order: toRecord(row) }
    })
  }

  async retryFailed (limit: number, now: number, after = 0): Promise<RetriedChunk> {
    return this.write((transitions) => {
      const [statement, params] = this.failedChunkQuery(limit, after)
      const rows = statement.all(params) as Array<ChangedRow & { seq: number }>
      for (const row of rows) this.sql.requeue.get({ orderId: row.order_id, now })
      transitions.requeued(rows, now)
      return { retried: rows.length, lastSeq: rows.length < limit ? null : (rows.at(-1) as { seq: number }).seq }
    })
  }

  private failedChunkQuery (limit: number, after: number): Query {
    return [this.sql.failedChunk, [after, limit]]
  }

  // One process uses the file: its clock is the store's.
  async claim (limit: number, now: number, leaseMs: number, withOrders = false): Promise<Claim[]> {
    return this.write((transitions) => {
      const token = randomUUID()
      const [statement, params] = this.claimQuery(limit, now, leaseMs, token, withOrders)
      if (!withOrders) {
        const rows = statement.all(params) as ClaimedRow[]
        transitions.claimed(rows, now)
        return claimsOf(rows, token)
      }
      const columns = statement.all(params) as unknown[][]
      const orders = columns.map(recordFromColumns)
      transitions.claimed(orders as ClaimedRow[], now)
      // While tracing is on, each order's traceparent follows its columns (SQL.claimOrdersTraced).
      return claimsOf(tracingOn ? orders.map((order, i) => ({ ...order as ClaimedRow, traceparent: (columns[i] as unknown[]).at(-1) as string | null })) : orders as ClaimedRow[], token, orders)
    })
  }

  private claimQuery (limit: number, now: number, leaseMs: number, token: string, withOrders = false): Query {
    return [withOrders ? (tracingOn ? this.sql.claimOrdersTraced : this.sql.claimOrders) : this.sql.claim, { token, now, leaseMs, limit }]
  }

  async extendLeases (claims: readonly Claim[], now: number, leaseMs: number): Promise<Claim[]> {
    return this.write(() => claims.filter(({ order_id: orderId, token }) => this.sql.extendLeases.run({ orderId, token, now, leaseMs }).changes === 0))
  }

  async settle (outcomes: Outcome[], now: number): Promise<number> {
    return this.write((transitions) => {
      const completed: ChangedRow[] = []
      const retried: QueuedRow[] = []
      const failed: ChangedRow[] = []
      // Each statement's parameters as one literal: spreading a shared object into them cost ~8% of
      // the end-to-end throughput (100,000 orders, zero delay: 53,900 against 58,600 orders/s).
      for (const outcome of outcomes) {
        const { order_id: orderId, token } = outcome.claim
        if (outcome.ok) pushRow(completed, this.sql.complete.get({ orderId, token, now, result: outcome.result ?? null }))
        else if (outcome.retryAt !== null) pushRow(retried, this.sql.retry.get({ orderId, token, now, retryAt: outcome.retryAt, error: outcome.error }))
        else pushRow(failed, this.sql.fail.get({ orderId, token, now, error: outcome.error }))
      }
      transitions.completed(completed, now)
      transitions.retried(retried, now)
      transitions.failed(failed, now)
      return completed.length + retried.length + failed.length
    })
  }

  async release (claims: Claim[], now: number): Promise<number> {
    return this.write((transitions) => {
      const held: ClaimedRow[] = []
      for (const { order_id: orderId, token } of claims) {
        const row = this.sql.claimed.get({ orderId, token }) as ClaimedRow | undefined
        if (!row) continue
        this.sql.release.run({ orderId, token, now })
        held.push(row)
      }
      transitions.released(held, now)
      return held.length
    })
  }

  async recoverExpired (now: number, maxAttempts: number, heldTokens: readonly string[]): Promise<number> {
    const held = JSON.stringify(heldTokens)
    return this.write((transitions) => {
      const failed = this.sql.failExpired.all({ now, maxAttempts, held }) as ChangedRow[]
      const retried = this.sql.retryExpired.all({ now, held }) as QueuedRow[]
      transitions.failed(failed, now)
      transitions.retried(retried, now)
      return failed.length + retried.length
    })
  }

  async openBatch (batchId: string, totalEntries: number, now: number): Promise<PopulateBatch> {
    return this.write(() => {
      this.sql.openBatch.run(batchId, totalEntries, now)
      const row = this.sql.batch.get(batchId) as Omit<PopulateBatch, 'failed_ids'> & { failed_ids: string }
      return { ...row, failed_ids: JSON.parse(row.failed_ids) as string[] }
    })
  }

  async populateChunk (batch: PopulateBatch, orders: NewOrder[], now: number, availableAt: number): Promise<PopulateBatch> {
    return this.write((transitions) => {
      if (this.sql.advanceBatch.run({ done: batch.entries_done + orders.length, batchId: batch.batch_id, from: batch.entries_done, now }).changes !== 1) {
        throw new BatchConflictError(batch.batch_id)
      }
      const existing = this.insertMany(orders, now, availableAt, transitions)
      const next = advanced(batch, orders.length, existing)
      if (existing.length > 0) this.sql.batchFailures.run(next.failure_count, JSON.stringify(next.failed_ids), batch.batch_id)
      return next
    })
  }

  async sweepOrders (status: FinishedStatus, before: number, limit: number): Promise<number> {
    return this.write((transitions) => this.deleted(transitions, this.sweepQuery(status, before, limit), 'retention'))
  }

  private sweepQuery (status: FinishedStatus, before: number, limit: number): Query {
    let statement = this.sweeps.get(status)
    if (!statement) {
      statement = this.db.prepare(SWEEP_ORDERS[status])
      this.sweeps.set(status, statement)
    }
    return [statement, { before, limit }]
  }

  async sweepDeliveries (before: number, limit: number): Promise<number> {
    return this.write((transitions) => this.webhooks.sweep(transitions, before, limit))
  }

  async sweepBatches (before: number, limit: number): Promise<number> {
    return this.write(() => this.sql.sweepBatches.run({ before, limit }).changes)
  }

  async deleteOrder (orderId: string): Promise<DeleteResult> {
    return this.write((transitions): DeleteResult => {
      const order = this.getSync(orderId)
      if (!order) return { deleted: false, order }
      return { deleted: this.deleted(transitions, [this.sql.deleteOrder, [orderId]], 'erasure') === 1, order }
    })
  }

  async requestErasure (userId: number, now: number): Promise<void> {
    await this.write(() => { this.sql.requestErasure.run(userId, now) })
  }

  async erasures (limit: number): Promise<number[]> {
    return (this.sql.erasures.all(limit) as Array<{ user_id: number }>).map((row) => row.user_id)
  }

  async deleteUserOrders (userId: number, limit: number): Promise<number> {
    return this.write((transitions) => {
      if (this.sql.erasure.get(userId) === undefined) return 0
      const erased = this.deleted(transitions, this.deleteUserQuery(userId, limit), 'erasure')
      if (erased < limit) this.sql.endErasure.run(userId)
      return erased
    })
  }

  private deleteUserQuery (userId: number, limit: number): Query {
    return [this.sql.deleteUserOrders, { userId, limit }]
  }

  /**
   * Runs a delete of orders; they leave the aggregates. An erasure deletes their webhook deliveries
   * too (their payloads hold the order); retention leaves those to WEBHOOK_DELIVERY_RETENTION.
   * Then their order.deleted events are recorded: after the erased deliveries, so as not to be among them.
   */
  private deleted (transitions: Transitions, query: Query, reason: DeleteReason): number {
    if (reason === 'retention') return this.deleteRows(transitions, query, reason)
    // An erasure's bytes are overwritten with zeros, on the pages kept and the pages freed: deleted
    // rows otherwise stay readable in the file until their space is reused.
    this.db.pragma('secure_delete = ON')
    try {
      return this.deleteRows(transitions, query, reason)
    } finally {
      this.db.pragma('secure_delete = FAST')
    }
  }

  private deleteRows (transitions: Transitions, [statement, params]: Query, reason: DeleteReason): number {
    const rows = statement.all(params) as DeletedRow[]
    transitions.deleted(rows)
    const erased = reason === 'erasure' ? rows.flatMap((row) => this.webhooks.deleteOrderDeliveries(transitions, row.order_id)) : []
    this.webhooks.recordDeletions(transitions, rows, reason, Date.now(), erased)
    return rows.length
  }

  // The database, its WAL and shared-memory index: what the store costs on disk.
  async diskBytes (): Promise<number> {
    if (this.path === ':memory:') return 0
    return ['', '-wal', '-shm'].reduce((sum, suffix) => sum + (statSync(this.path + suffix, { throwIfNoEntry: false })?.size ?? 0), 0)
  }

  async nextAvailableAt (): Promise<number | null> {
    return (this.sql.nextAvailable.get() as { at: number | null }).at
  }

  async stats (): Promise<OrderStats> {
    const { stats } = this.memory
    return { ...stats, counts: { ...stats.counts } }
  }

  async overview (): Promise<Overview> {
    return { stats: await this.stats(), processing: this.memory.processing }
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
      case 'claim': return this.claimQuery(call[1], call[2], call[3], 'a token', call[4])
      case 'nextAvailableAt': return [this.sql.nextAvailable, []]
      case 'retryFailed': return this.failedChunkQuery(call[1], call[3] ?? 0)
      case 'sweepOrders': return this.sweepQuery(call[1], call[2], call[3])
      case 'deleteUserOrders': return this.deleteUserQuery(call[1], call[2])
      default: return this.webhooks.query(call)
    }
  }

  // Read from the file: processors look once a second, whatever was or was not announced.
  async processingState (): Promise<ProcessingState> {
    this.memory.processing = this.sql.processingState.get() as ProcessingState
    return this.memory.processing
  }

  // The clock is read in the transaction, after the claims committed before it or earlier in it.
  async setProcessingState (state: ProcessingState['state'], clock: () => number): Promise<ProcessingState> {
    const { changed, current } = await this.write(() => {
      const set = this.sql.setProcessingState.get({ state, now: clock() }) as ProcessingState | undefined
      return { changed: set !== undefined, current: set ?? this.sql.processingState.get() as ProcessingState }
    })
    // Announced once committed, in this process: one process uses the file.
    this.memory.processing = current
    if (changed) this.stateListeners.emit(current)
    return current
  }

  async cursorKey (): Promise<string> {
    return (this.sql.cursorKey.get() as { value: string }).value
  }

  // Goes through the same commit as orders, so it fails exactly when they would: locked, read-only, disk full.
  async ping (now: number): Promise<void> {
    await this.write(() => this.sql.readinessCheck.run(now))
  }

  async createEndpoint (endpoint: NewEndpoint, now: number, maxEndpoints: number): Promise<EndpointRecord | null> {
    return this.write((transitions) => this.webhooks.createEndpoint(transitions, endpoint, now, maxEndpoints))
  }

  async endpoints (): Promise<EndpointRecord[]> {
    return this.webhooks.endpoints()
  }

  async endpoint (id: string): Promise<EndpointRecord | undefined> {
    return this.webhooks.endpoint(id)
  }

  async deleteEndpoint (id: string, now: number): Promise<boolean> {
    const deleted = await this.write((transitions) => this.webhooks.deleteEndpoint(transitions, id, now))
    if (deleted) this.purges.wake()
    return deleted
  }

  async purgeDeletedEndpoints (limit: number): Promise<boolean> {
    return this.write(() => this.webhooks.purge(limit))
  }

  async queueDelivery (delivery: NewDelivery, now: number): Promise<boolean> {
    return this.write((transitions) => this.webhooks.queue(transitions, delivery, now))
  }

  async redeliver (endpointId: string, now: number): Promise<number | undefined> {
    return this.write((transitions) => this.webhooks.redeliver(transitions, endpointId, now))
  }

  async deliveries (endpointId: string, query: DeliveryQuery): Promise<DeliveryPage> {
    return this.webhooks.deliveries(endpointId, query)
  }

  async claimDeliveries (limit: number, now: number, leaseMs: number, cap?: EndpointCap): Promise<DeliveryClaim[]> {
    return this.write(() => this.webhooks.claim(limit, now, leaseMs, cap))
  }

  async settleDeliveries (outcomes: DeliveryOutcome[], now: number, circuit = DEFAULT_CIRCUIT): Promise<number> {
    return this.write((transitions) => this.webhooks.settle(transitions, outcomes, now, circuit))
  }

  async releaseDeliveries (claims: DeliveryClaim[], now: number): Promise<number> {
    return this.write((transitions) => this.webhooks.release(transitions, claims, now))
  }

  async nextDeliveryIn (now: number): Promise<number | null> {
    return this.webhooks.nextIn(now)
  }

  async close (): Promise<void> {
    await this.purges.close()
    await this.checkpointer?.close()
    if (this.db.open) this.db.close()
  }
}

/** A new order as the transitions see it: Pending, never attempted. */
function newRow (orderId: string, now: number, availableAt: number): QueuedRow {
  return { order_id: orderId, attempts: 0, created_at: now, processing_started_at: null, available_at: availableAt }
}

function pushRow<T> (rows: T[], row: unknown): void {
  if (row !== undefined) rows.push(row as T)
}
