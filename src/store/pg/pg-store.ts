import { randomInt, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { NewOrder, OrderRecord, OrderStatus } from '../../order.ts'
import { sameOrder, toCents } from '../../order.ts'
import { GroupCommit, type Settled } from '../group-commit.ts'
import { migrate } from './migrations.ts'
import { PgListener } from './listener.ts'
import { decodeAvailableAt, decodeChanges, decodeProcessingState, decodeSignal, encodeChanges, encodeProcessingState } from './notifications.ts'
import { statsFromRows } from '../stats-delta.ts'
import type {
  CancelResult, Claim, CreateResult, DeleteReason, DeleteResult, FinishedStatus, IdPage, IndexedCall, ListQuery, OrderPage, OrderStats, OrderStore,
  OrderChange, Outcome, Overview, PopulateBatch, ProcessingState, RetriedChunk, RetryResult
} from '../order-store.ts'
import { advanced } from '../populate-batches.ts'
import { BatchConflictError, StoreUnavailableError } from '../store-errors.ts'
import { StoreEvents } from '../store-events.ts'
import type { ChangedRow } from '../change-log.ts'
import { SharedRead } from '../shared-read.ts'
import { claimsOf, Transitions, type ClaimedRow, type DeletedRow, type QueuedRow } from '../transitions.ts'
import {
  BEGIN_INDEX_WALKS, claimQuery, deleteUserOrdersQuery, failedChunkQuery, idsQuery, listQuery, NEXT_AVAILABLE, SQL, sweepDeliveriesQuery, sweepOrdersQuery
} from './statements.ts'
import type { StoreLog } from '../store-log.ts'
import { claimDeliveriesQuery, deliveriesQuery, PgWebhooks } from './pg-webhooks.ts'
import { tracingOn } from '../../tracing.ts'
import type { BatchSweeper } from '../batch-sweeper.ts'
import {
  DEFAULT_CIRCUIT, purgeSweeper, type DeliveryClaim, type DeliveryOutcome, type DeliveryPage, type DeliveryQuery, type DeliveryStatus, type EndpointCap, type EndpointRecord, type ErasedDelivery, type NewDelivery, type NewEndpoint
} from '../webhook-store.ts'

const CHANNEL = 'orders_available'
const CHANGES_CHANNEL = 'order_changes'
/**
 * The application_name of every process's LISTEN connection, followed by an id of the process's
 * own: change events are announced only while another process's is connected.
 */
const LISTENER_NAME = 'order-service listener'
const STATE_CHANNEL = 'processing_state'
/** Webhook deliveries became due (no payload): every process's deliverer looks. */
const DELIVERIES_CHANNEL = 'webhook_deliveries_due'
/** Webhook endpoints were created or deleted (no payload): every process reloads which statuses they want. */
const ENDPOINTS_CHANNEL = 'webhook_endpoints_changed'
/**
 * The endpoints are read again this often even when nothing is announced: an announcement can be
 * lost (a LISTEN connection that went away unseen), and a missed one would leave this process
 * recording no delivery for a new endpoint for good.
 */
const SUBSCRIPTIONS_REFRESH_MS = 45_000
/** A failed reload is tried again after this, doubling up to SUBSCRIPTIONS_RETRY_MAX_MS, until one succeeds. */
const SUBSCRIPTIONS_RETRY_MS = 100
const SUBSCRIPTIONS_RETRY_MAX_MS = 5000
/**
 * Counter shards: each transaction writes one, picked at random, so that no single row is hot, and
 * two transactions of one process at once (a claim beside a settle) seldom wait for each other.
 */
const STAT_SHARDS = 64
const randomShard = (): number => randomInt(STAT_SHARDS)
/**
 * Creates waiting for the next group commit; more are refused (503). Healthy, a batch is what
 * arrived during one commit, at most one per concurrent client (the benchmark's 100 make batches
 * of up to 100), and 1000 commit in 25-60 ms (the largest bodies, 1000 item ids each, in 0.9 s):
 * well within DATABASE_TIMEOUT_MS. A full queue means a stalled database, not load, and what it
 * holds stays small: a thousand of the largest bodies are about 20 MB.
 */
export const MAX_WAITING_CREATES = 1000

// BIGINT columns hold epoch milliseconds, cents and ids below 2^53: numbers, not strings.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser
}

/** Any constant: the advisory lock one sweep batch holds, so that one process sweeps at a time. */
const SWEEP_LOCK = 7_215_302

/** `deadline`: when the create's time runs out (DATABASE_TIMEOUT_MS after it was asked for). */
interface PendingCreate { order: NewOrder, now: number, availableAt: number, deadline: number, traceparent?: string }

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
  'Scan Direction'?: 'Forward' | 'Backward' | 'NoMovement'
  Filter?: string
  Plans?: PlanNode[]
}

type Tx = pg.PoolClient

/**
 * The scale-out store: several API and worker processes share one PostgreSQL database, which is
 * also the queue. Claims skip rows other workers hold (FOR UPDATE SKIP LOCKED); new work is
 * announced with NOTIFY, so idle workers wake without polling.
 */
export class PgStore extends StoreEvents implements OrderStore {
  private readonly creates = new GroupCommit<PendingCreate, CreateResult>((items) => this.createBatch(items), MAX_WAITING_CREATES)
  private readonly listener: PgListener
  private readonly timeoutMs: number
  private readonly overviews = new SharedRead(() => this.readOverview())
  private readonly log: StoreLog
  private readonly webhooks: PgWebhooks
  private readonly purges: BatchSweeper
  private reloadTimer: NodeJS.Timeout | null = null
  private reloadFailures = 0
  /** This process's LISTEN connection's application_name. */
  private readonly listenerName = `${LISTENER_NAME} ${randomUUID()}`
  /** Whether the last transaction found another process's listener connected. */
  private othersListening = true
  /** A change was announced since the listener was last caught up: its notification may still be on its way. */
  private announcedSinceCaughtUp = false
  /**
   * Changes handed over directly that wait for the announced ones before them to be delivered, in
   * turns: each turn's are handed over when the listener's round trip begun with it answers.
   */
  private readonly handOvers: OrderChange[][][] = []

  private constructor (private readonly pool: pg.Pool, connection: pg.ClientConfig, { timeoutMs, log }: PgStoreOptions) {
    super()
    this.timeoutMs = timeoutMs
    this.log = log
    this.webhooks = new PgWebhooks(pool, randomShard)
    this.purges = purgeSweeper(this, (err) => { log.warn({ err }, "removing a deleted webhook endpoint's deliveries failed") })
    this.listener = new PgListener({
      connection: { ...connection, query_timeout: timeoutMs, application_name: this.listenerName },
      checkEveryMs: timeoutMs,
      channels: {
        [CHANNEL]: this.receive(decodeAvailableAt, (at) => this.workListeners.emit(at)),
        [CHANGES_CHANNEL]: this.receive(decodeChanges, (changes) => this.changeListeners.emit(changes)),
        [DELIVERIES_CHANNEL]: this.receive(decodeSignal, () => this.deliveryListeners.emit()),
        [ENDPOINTS_CHANNEL]: this.receive(decodeSignal, () => { void this.reloadSubscriptions() }),
        [STATE_CHANNEL]: this.receive(decodeProcessingState, (state) => this.stateListeners.emit(state))
      },
      // A transaction that looked for other processes' listeners before this one connected, and so
      // hands its changes only to its own process's listeners, commits before this process counts as
      // listening: it holds a lock on orders (its changes are writes to orders) until then.
      afterListen: (client) => client.query(SQL.awaitWriters),
      // Work announced while the listener was away would wait for the next announcement.
      onReconnected: () => {
        this.workListeners.emit(Date.now())
        this.deliveryListeners.emit()
        void this.reloadSubscriptions()
      },
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
    // After LISTEN: an endpoint created meanwhile is either read here or announced.
    await store.webhooks.reload()
    // A removal cut short (this process's or another's, stopped or crashed) is finished.
    store.purges.wake()
    store.reloadAfter(SUBSCRIPTIONS_REFRESH_MS)
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
    fn: (tx: Tx, transitions: Transitions) => Promise<T>,
    deadline = Date.now() + this.timeoutMs,
    begin = 'BEGIN'
  ): Promise<T> {
    const tx = await this.connect(deadline)
    let failure: Error | undefined
    // A connection lost between two queries is emitted as an event: without a listener it would
    // crash the process. The next query fails with it instead, and the client is discarded.
    const onLost = (err: Error) => { failure = err }
    tx.on('error', onLost)
    let expired = false
    const transitions = new Transitions()
    let unannounced: string | null = null
    const timer = setTimeout(() => {
      expired = true
      tx.connection.stream.destroy()
    }, deadline - Date.now())
    try {
      await tx.query(begin)
      // Any process may stream changes, so every change is kept: announced to them all (on commit, in
      // commit order) while another process listens, else handed to this one's listeners after the commit.
      const result = await fn(tx, transitions)
      unannounced = await this.record(tx, transitions)
      await tx.query('COMMIT')
      // Not announced, no other process listening: this one's own listeners hear them from here.
      if (unannounced !== null) this.handOver(transitions.log.changes)
      // Other processes reload when they hear it; this one before its caller goes on.
      if (transitions.deliveries.endpointsChanged) await this.reloadSubscriptions()
      return result
    } catch (err) {
      failure = err as Error
      await tx.query('ROLLBACK').catch(() => {})
      // The COMMIT may have been sent, and the server committed, its answer lost.
      if (unannounced !== null) void this.handOverIfCommitted(unannounced, transitions.log.changes)
      throw expired ? this.deadlinePassed() : err
    } finally {
      clearTimeout(timer)
      tx.off('error', onLost)
      tx.release(failure)
    }
  }

  /** A transaction of the processing loop, a delivery claim, a list page, or a retention or erasure batch, its planner held to index walks (BEGIN_INDEX_WALKS). */
  private async walkingTransaction<T> (fn: (tx: Tx, transitions: Transitions) => Promise<T>): Promise<T> {
    return this.transaction(fn, undefined, BEGIN_INDEX_WALKS)
  }

  /**
   * Hands changes that were not announced to this process's listeners: at once, unless changes this
   * process announced before may still be on their way to its listener (another process just went);
   * then after them, so that the changes of an order come in commit order.
   */
  private handOver (changes: OrderChange[]): void {
    if (this.announcedSinceCaughtUp) {
      this.announcedSinceCaughtUp = false
      const turn: OrderChange[][] = []
      this.handOvers.push(turn)
      this.listener.afterDelivered(() => {
        this.handOvers.splice(this.handOvers.indexOf(turn), 1)
        for (const waiting of turn) this.changeListeners.emit(waiting)
      })
    }
    const turn = this.handOvers.at(-1)
    if (turn) turn.push(changes)
    else this.changeListeners.emit(changes)
  }

  /** Hands over the changes of a transaction whose COMMIT's answer was lost, if it committed. */
  private async handOverIfCommitted (xid: string, changes: OrderChange[]): Promise<void> {
    try {
      const { rows } = await this.pool.query<{ committed: boolean | null }>(SQL.committed, [xid])
      if (rows[0]?.committed === true) this.handOver(changes)
    } catch (err) {
      this.log.warn({ err, changes: changes.length }, 'could not tell whether a transaction whose commit was not answered committed: its changes are not streamed')
    }
  }

  /**
   * Writes the transaction's aggregates, and sends its wake-up and, while another process listens,
   * its change events, all delivered on commit. Returns the transaction's id when it has change
   * events that were not sent (the caller hands them over once committed), else null.
   */
  private async record (tx: Tx, transitions: Transitions): Promise<string | null> {
    const { delta, log, wakeAt, deliveries } = transitions
    // Deliveries are recorded with the status changes that make them, in their transaction.
    await this.webhooks.finish(tx, transitions, Date.now())
    const entries = [...delta.changes].sort(([a], [b]) => (a < b ? -1 : 1))
    // Encoded only while the last transaction found another process listening.
    const encoded = this.othersListening ? encodeChanges(log.changes) : []
    const announcements: Array<[string, string]> = encoded.map((payload) => [CHANGES_CHANNEL, payload])
    if (wakeAt !== Infinity) announcements.push([CHANNEL, String(wakeAt)])
    if (deliveries.due) announcements.push([DELIVERIES_CHANNEL, ''])
    if (deliveries.endpointsChanged) announcements.push([ENDPOINTS_CHANNEL, ''])
    if (entries.length === 0 && announcements.length === 0 && log.changes.length === 0) return null
    const { rows } = await tx.query<{ listening: boolean, xid: string }>(SQL.record, [
      randomShard(), entries.map(([name]) => name), entries.map(([, value]) => value),
      announcements.map(([channel]) => channel), announcements.map(([, payload]) => payload),
      CHANGES_CHANNEL, `${LISTENER_NAME} %`, this.listenerName
    ])
    const { listening, xid } = rows[0] as { listening: boolean, xid: string }
    this.othersListening = listening
    if (log.changes.length === 0) return null
    if (!listening) return xid
    this.announcedSinceCaughtUp = true
    // Another process's listener came since: this transaction's changes are announced too.
    if (encoded.length === 0) await tx.query(SQL.notify, [CHANGES_CHANNEL, encodeChanges(log.changes)])
    return null
  }

  /**
   * A failed reload keeps the subscriptions as they were: logged, and tried again with backoff
   * until one succeeds (waiting for the next announcement, which may never come, left a new
   * endpoint without deliveries for good); after a success, again in SUBSCRIPTIONS_REFRESH_MS.
   */
  private async reloadSubscriptions (): Promise<void> {
    try {
      await this.webhooks.reload()
      this.reloadFailures = 0
      this.endpointListeners.emit()
      this.reloadAfter(SUBSCRIPTIONS_REFRESH_MS)
    } catch (err) {
      this.reloadFailures += 1
      const retryMs = Math.min(SUBSCRIPTIONS_RETRY_MS * 2 ** (this.reloadFailures - 1), SUBSCRIPTIONS_RETRY_MAX_MS)
      this.log.warn({ err, retryMs }, 'could not reload webhook endpoints')
      this.reloadAfter(retryMs)
    }
  }

  private reloadAfter (ms: number): void {
    if (this.reloadTimer) clearTimeout(this.reloadTimer)
    if (this.pool.ending) return
    this.reloadTimer = setTimeout(() => { void this.reloadSubscriptions() }, ms)
    this.reloadTimer.unref()
  }

  /** Inserts orders in one statement; returns the rows inserted, as new orders. */
  private async insert (tx: Tx, orders: Array<{ order: NewOrder, now: number, availableAt: number, traceparent?: string }>): Promise<QueuedRow[]> {
    const { rows } = await tx.query<QueuedRow>(SQL.insert, [
      orders.map((o) => o.order.order_id),
      orders.map((o) => o.order.user_id),
      orders.map((o) => JSON.stringify(o.order.item_ids)),
      orders.map((o) => toCents(o.order.total_amount)),
      orders.map((o) => o.now),
      orders.map((o) => o.availableAt),
      tracingOn ? orders.map((o) => o.traceparent ?? null) : null
    ])
    return rows
  }

  private async createBatch (items: PendingCreate[]): Promise<Array<Settled<CreateResult>>> {
    // The batch ends when its oldest create's time runs out: no create waits past its own deadline.
    const deadline = Math.min(...items.map((item) => item.deadline))
    return this.transaction(async (tx, transitions) => {
      const created = await this.insert(tx, items)
      transitions.created(created)
      const inserted = new Set(created.map((row) => row.order_id))
      // The same id twice in a batch: the first is inserted, the second compared with it.
      const others = items.filter((item) => !inserted.delete(item.order.order_id))
      // Only ids that were not inserted need their stored order compared (a retry or a conflict).
      const existing = new Map(others.length === 0
        ? []
        : (await tx.query<OrderRecord>(SQL.existing, [others.map((o) => o.order.order_id)])).rows.map((record) => [record.order_id, record]))
      return items.map((item): Settled<CreateResult> => {
        const record = others.includes(item) ? existing.get(item.order.order_id) : undefined
        if (!record) return { ok: true, value: 'created' }
        return { ok: true, value: sameOrder(record, item.order) ? 'exists' : 'conflict' }
      })
    }, deadline)
  }

  async create (order: NewOrder, now: number, availableAt: number, traceparent?: string): Promise<CreateResult> {
    return this.creates.submit({ order, now, availableAt, deadline: Date.now() + this.timeoutMs, traceparent })
  }

  // The grouped creates' transaction, for one request's orders: it already compares an id given twice.
  async createEach (orders: NewOrder[], now: number, availableAt: number, traceparent?: string): Promise<CreateResult[]> {
    const deadline = Date.now() + this.timeoutMs
    const results = await this.createBatch(orders.map((order) => ({ order, now, availableAt, deadline, traceparent })))
    return results.map((result) => {
      if (!result.ok) throw result.error
      return result.value
    })
  }

  async createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]> {
    return this.transaction((tx, transitions) => this.insertMany(tx, orders, now, availableAt, transitions))
  }

  /** Inserts orders in a transaction; returns the ids that already existed. */
  private async insertMany (tx: Tx, orders: NewOrder[], now: number, availableAt: number, transitions: Transitions): Promise<string[]> {
    const created = await this.insert(tx, orders.map((order) => ({ order, now, availableAt })))
    transitions.created(created)
    const inserted = new Set(created.map((row) => row.order_id))
    return orders.map((o) => o.order_id).filter((id) => !inserted.has(id))
  }

  async get (orderId: string): Promise<OrderRecord | undefined> {
    return (await this.pool.query<OrderRecord>(SQL.get, [orderId])).rows[0]
  }

  async list (query: ListQuery): Promise<OrderPage> {
    // Without statistics, PostgreSQL read a customer's orders of a status by a bitmap scan and sorted them all.
    const { rows } = await this.walkingTransaction((tx) => tx.query<OrderRecord & { more?: boolean }>(listQuery(query)))
    const more = rows.length > query.limit || rows.at(-1)?.more === true
    const orders = rows.slice(0, query.limit)
    for (const order of orders) delete order.more
    return { orders, lastSeq: more ? (orders.at(-1) as OrderRecord).seq : null }
  }

  async cancel (orderId: string, now: number): Promise<CancelResult> {
    return this.transaction(async (tx, transitions): Promise<CancelResult> => {
      const [cancelled] = (await tx.query<OrderRecord>(SQL.cancel, [now, orderId])).rows
      if (cancelled) {
        transitions.cancelled([cancelled], now)
        return { cancelled: true, order: cancelled }
      }
      return { cancelled: false, order: (await tx.query<OrderRecord>(SQL.get, [orderId])).rows[0] }
    })
  }

  async claim (limit: number, now: number, leaseMs: number, withOrders = false): Promise<Claim[]> {
    const token = randomUUID()
    return this.walkingTransaction(async (tx, transitions) => {
      const { rows } = await tx.query<ClaimedRow & { traceparent?: string | null }>(claimQuery(limit, now, leaseMs, token, withOrders, tracingOn))
      transitions.claimed(rows, now)
      return claimsOf(rows, token, withOrders ? rows as unknown as OrderRecord[] : undefined)
    })
  }

  // Leases run by the database's clock, as claims set them.
  async extendLeases (claims: readonly Claim[], _now: number, leaseMs: number): Promise<Claim[]> {
    if (claims.length === 0) return []
    return this.walkingTransaction(async (tx) => {
      const key = (claim: { order_id: string, token: string }) => `${claim.token} ${claim.order_id}`
      const { rows } = await tx.query<{ order_id: string, token: string }>(SQL.extendLeases, [leaseMs, claims.map((c) => c.order_id), claims.map((c) => c.token)])
      const renewed = new Set(rows.map(key))
      const skipped = claims.filter((claim) => !renewed.has(key(claim)))
      if (skipped.length === 0) return []
      const current = await tx.query<{ order_id: string, token: string }>(SQL.currentClaims, [skipped.map((c) => c.order_id), skipped.map((c) => c.token)])
      const stillCurrent = new Set(current.rows.map(key))
      return skipped.filter((claim) => !stillCurrent.has(key(claim)))
    })
  }

  async retry (orderId: string, now: number): Promise<RetryResult> {
    return this.transaction(async (tx, transitions): Promise<RetryResult> => {
      const failed = await this.requeue(tx, [orderId], now, transitions)
      return { retried: failed.length === 1, order: (await tx.query<OrderRecord>(SQL.get, [orderId])).rows[0] }
    })
  }

  async retryFailed (limit: number, now: number, after = 0): Promise<RetriedChunk> {
    return this.transaction(async (tx, transitions) => {
      const { rows } = await tx.query<{ seq: number, order_id: string }>(failedChunkQuery(limit, after))
      await this.requeue(tx, rows.map((row) => row.order_id), now, transitions)
      return { retried: rows.length, lastSeq: rows.length < limit ? null : (rows.at(-1) as { seq: number }).seq }
    })
  }

  /** Sends those of the orders that are Failed back to Pending; returns them as they were. */
  private async requeue (tx: Tx, orderIds: string[], now: number, transitions: Transitions): Promise<ChangedRow[]> {
    const { rows } = await tx.query<ChangedRow>(SQL.requeue, [now, orderIds])
    transitions.requeued(rows, now)
    return rows
  }

  async settle (outcomes: Outcome[], now: number): Promise<number> {
    const done = outcomes.filter((o): o is Extract<Outcome, { ok: true }> => o.ok)
    const retries = outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok && o.retryAt !== null)
    const failures = outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok && o.retryAt === null)
    const ids = (list: Outcome[]) => list.map((o) => o.claim.order_id)
    const tokens = (list: Outcome[]) => list.map((o) => o.claim.token)
    return this.walkingTransaction(async (tx, transitions) => {
      const run = async <R>(list: Outcome[], sql: string, params: unknown[]): Promise<R[]> =>
        list.length === 0 ? [] : (await tx.query<R & pg.QueryResultRow>(sql, params)).rows
      const completed = await run<ChangedRow>(done, SQL.complete,
        [now, ids(done), tokens(done), done.map((o) => o.result ?? null)])
      const retried = await run<QueuedRow>(retries, SQL.retry,
        [now, ids(retries), tokens(retries), retries.map((o) => o.retryAt), retries.map((o) => o.error)])
      const failed = await run<ChangedRow>(failures, SQL.fail, [now, ids(failures), tokens(failures), failures.map((o) => o.error)])
      transitions.completed(completed, now)
      transitions.retried(retried, now)
      transitions.failed(failed, now)
      return completed.length + retried.length + failed.length
    })
  }

  async release (claims: Claim[], now: number): Promise<number> {
    return this.walkingTransaction(async (tx, transitions) => {
      const { rows } = await tx.query<ClaimedRow>(SQL.release, [now, claims.map((c) => c.order_id), claims.map((c) => c.token)])
      transitions.released(rows, now)
      return rows.length
    })
  }

  async recoverExpired (now: number, maxAttempts: number, heldTokens: readonly string[]): Promise<number> {
    return this.walkingTransaction(async (tx, transitions) => {
      const failed = (await tx.query<ChangedRow>(SQL.failExpired, [now, maxAttempts, heldTokens])).rows
      const retried = (await tx.query<QueuedRow>(SQL.retryExpired, [now, heldTokens])).rows
      transitions.failed(failed, now)
      transitions.retried(retried, now)
      return failed.length + retried.length
    })
  }

  async nextAvailableAt (): Promise<number | null> {
    // pg answers a string of several statements with the result of each.
    const results = await this.pool.query(NEXT_AVAILABLE) as unknown as pg.QueryResult[]
    const found = results.find((result) => result.command === 'SELECT') as pg.QueryResult<{ at: number | null }>
    return found.rows[0]?.at ?? null
  }

  async stats (): Promise<OrderStats> {
    const { rows } = await this.pool.query<{ name: string, value: number }>(SQL.stats)
    return statsFromRows(rows)
  }

  // One query, not stats() and processingState(): two took two pooled connections a request, and
  // /orders/metrics fell from 4,200-8,200 req/s (the aggregates alone) to 2,800-5,200; one: 4,600-6,000.
  // Concurrent callers share it (SharedRead).
  async overview (): Promise<Overview> {
    return this.overviews.get()
  }

  private async readOverview (): Promise<Overview> {
    const { rows } = await this.pool.query<ProcessingState & { name: string | null, value: number | null }>(SQL.overview)
    const { state, since } = rows[0] as ProcessingState
    return { stats: statsFromRows(rows.filter((row) => row.name !== null) as Array<{ name: string, value: number }>), processing: { state, since } }
  }

  async idsByStatus (status: OrderStatus, limit: number, after = 0): Promise<IdPage> {
    const { rows } = await this.pool.query<{ seq: number, order_id: string }>(idsQuery(status, limit, after))
    const listed = rows.slice(0, limit)
    return { ids: listed.map((row) => row.order_id), lastSeq: rows.length > limit ? (listed.at(-1) as { seq: number }).seq : null }
  }

  /** The plan PostgreSQL picks for what a call runs, with its arguments and settings (EXPLAIN (FORMAT JSON)). */
  async explain (...call: IndexedCall): Promise<PlanNode> {
    const explainIn = async (tx: Tx) => {
      const { text, values } = call[0] === 'claimDeliveries' ? await claimDeliveriesQuery(tx, call[1], call[3], 'a token') : indexedQuery(call)
      const { rows } = await tx.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (FORMAT JSON) ${text}`, values)
      return (rows[0] as { 'QUERY PLAN': Array<{ Plan: PlanNode }> })['QUERY PLAN'][0]!.Plan
    }
    // Those that run under BEGIN_INDEX_WALKS are planned under it.
    return WALKING_CALLS.has(call[0]) ? this.walkingTransaction(explainIn) : this.transaction(explainIn)
  }

  async openBatch (batchId: string, totalEntries: number, now: number): Promise<PopulateBatch> {
    await this.pool.query(SQL.openBatch, [batchId, totalEntries, now])
    const { rows } = await this.pool.query<PopulateBatch>(SQL.batch, [batchId])
    return rows[0] as PopulateBatch
  }

  async populateChunk (batch: PopulateBatch, orders: NewOrder[], now: number, availableAt: number): Promise<PopulateBatch> {
    return this.transaction(async (tx, transitions) => {
      // First, so that a second call on the same batch waits for this row and then finds it moved, before inserting anything.
      const { rowCount } = await tx.query(SQL.advanceBatch, [batch.entries_done + orders.length, batch.batch_id, batch.entries_done, now])
      if (rowCount !== 1) throw new BatchConflictError(batch.batch_id)
      const existing = await this.insertMany(tx, orders, now, availableAt, transitions)
      const next = advanced(batch, orders.length, existing)
      if (existing.length > 0) await tx.query(SQL.batchFailures, [next.failure_count, next.failed_ids, batch.batch_id])
      return next
    })
  }

  async sweepOrders (status: FinishedStatus, before: number, limit: number): Promise<number> {
    return this.sweep((tx, transitions) => this.deleted(tx, transitions, sweepOrdersQuery(status, before, limit), 'retention'))
  }

  async sweepDeliveries (before: number, limit: number): Promise<number> {
    return this.sweep(async (tx, transitions) => {
      const { rows } = await tx.query<{ endpoint_id: string, status: DeliveryStatus }>(sweepDeliveriesQuery(before, limit))
      transitions.deliveries.removed(rows)
      return rows.length
    })
  }

  async sweepBatches (before: number, limit: number): Promise<number> {
    return this.sweep(async (tx) => (await tx.query(SQL.sweepBatches, [before, limit])).rowCount ?? 0)
  }

  /** A sweep batch in a transaction, while this process holds the sweep lock; 0 while another does. */
  private async sweep (fn: (tx: Tx, transitions: Transitions) => Promise<number>): Promise<number> {
    return this.walkingTransaction(async (tx, transitions) => {
      const { rows } = await tx.query<{ locked: boolean }>(SQL.sweepLock, [SWEEP_LOCK])
      return rows[0]?.locked === true ? fn(tx, transitions) : 0
    })
  }

  async deleteOrder (orderId: string): Promise<DeleteResult> {
    return this.transaction(async (tx, transitions): Promise<DeleteResult> => {
      const [order] = (await tx.query<OrderRecord>(SQL.lockOrder, [orderId])).rows
      if (!order) return { deleted: false, order }
      return { deleted: await this.deleted(tx, transitions, { text: SQL.deleteOrder, values: [orderId] }, 'erasure') === 1, order }
    })
  }

  async requestErasure (userId: number, now: number): Promise<void> {
    await this.pool.query(SQL.requestErasure, [userId, now])
  }

  async erasures (limit: number): Promise<number[]> {
    return (await this.pool.query<{ user_id: number }>(SQL.erasures, [limit])).rows.map((row) => row.user_id)
  }

  async deleteUserOrders (userId: number, limit: number): Promise<number> {
    return this.walkingTransaction(async (tx, transitions) => {
      if ((await tx.query(SQL.erasure, [userId])).rowCount !== 1) return 0
      const erased = await this.deleted(tx, transitions, deleteUserOrdersQuery(userId, limit), 'erasure')
      if (erased < limit) await tx.query(SQL.endErasure, [userId])
      return erased
    })
  }

  /**
   * Runs a delete of orders; they leave the aggregates. An erasure deletes their webhook deliveries
   * too (their payloads hold the order); retention leaves those to WEBHOOK_DELIVERY_RETENTION.
   * Then their order.deleted events are recorded: after the erased deliveries, so as not to be among them.
   */
  private async deleted (tx: Tx, transitions: Transitions, query: pg.QueryConfig, reason: DeleteReason): Promise<number> {
    const { rows } = await tx.query<DeletedRow>(query)
    if (rows.length === 0) return 0
    transitions.deleted(rows)
    const erased = reason === 'erasure' ? (await tx.query<ErasedDelivery>(SQL.deleteOrderDeliveries, [rows.map((row) => row.order_id)])).rows : []
    transitions.deliveries.removed(erased)
    await this.webhooks.recordDeletions(tx, transitions, rows, reason, Date.now(), erased)
    return rows.length
  }

  async diskBytes (): Promise<number> {
    return (await this.pool.query<{ bytes: number }>(SQL.diskBytes)).rows[0]?.bytes ?? 0
  }

  async processingState (): Promise<ProcessingState> {
    return (await this.pool.query<ProcessingState>(SQL.processingState)).rows[0] as ProcessingState
  }

  // The row is locked first, which waits for the claims under way (each holds it FOR SHARE until it
  // commits), and `since` read after: taken before, claims that had started since then still
  // committed ahead of the pause, 3-96 ms after its `since`.
  async setProcessingState (state: ProcessingState['state'], clock: () => number): Promise<ProcessingState> {
    return this.transaction(async (tx) => {
      const current = (await tx.query<ProcessingState>(SQL.lockProcessingState)).rows[0] as ProcessingState
      if (current.state === state) return current
      const changed = (await tx.query<ProcessingState>(SQL.setProcessingState, [state, clock()])).rows[0] as ProcessingState
      // Every process hears it on commit, this one included.
      await tx.query(SQL.notify, [STATE_CHANNEL, [encodeProcessingState(changed)]])
      return changed
    })
  }

  async cursorKey (): Promise<string> {
    const { rows } = await this.pool.query<{ value: string }>(SQL.cursorKey)
    return (rows[0] as { value: string }).value
  }

  // A write, not SELECT 1: a server that is reachable but read-only (a standby, a full disk) is not
  // ready, nor is one where a write to orders would wait (a lock held on the table); the deadline
  // ends a check stuck behind a lock.
  async ping (now: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.query(SQL.lockOrders)
      const { rowCount } = await tx.query(SQL.readinessCheck, [now])
      if (rowCount !== 1) throw new Error('readiness_checks has no row to write')
    })
  }

  async notificationQueueUsage (): Promise<number> {
    const { rows } = await this.pool.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage')
    return (rows[0] as { usage: number }).usage
  }

  async createEndpoint (endpoint: NewEndpoint, now: number, maxEndpoints: number): Promise<EndpointRecord | null> {
    return this.transaction((tx, transitions) => this.webhooks.createEndpoint(tx, transitions, endpoint, now, maxEndpoints))
  }

  async endpoints (): Promise<EndpointRecord[]> {
    return this.webhooks.endpoints()
  }

  async endpoint (id: string): Promise<EndpointRecord | undefined> {
    return this.webhooks.endpoint(id)
  }

  async deleteEndpoint (id: string, now: number): Promise<boolean> {
    const deleted = await this.transaction((tx, transitions) => this.webhooks.deleteEndpoint(tx, transitions, id, now))
    if (deleted) this.purges.wake()
    return deleted
  }

  async purgeDeletedEndpoints (limit: number): Promise<boolean> {
    return this.transaction((tx) => this.webhooks.purge(tx, limit))
  }

  async queueDelivery (delivery: NewDelivery, now: number): Promise<boolean> {
    return this.transaction((tx, transitions) => this.webhooks.queue(tx, transitions, delivery, now))
  }

  async redeliver (endpointId: string, now: number): Promise<number | undefined> {
    return this.transaction((tx, transitions) => this.webhooks.redeliver(tx, transitions, endpointId, now))
  }

  async deliveries (endpointId: string, query: DeliveryQuery): Promise<DeliveryPage> {
    return this.webhooks.deliveries(endpointId, query)
  }

  // Due times and leases go by the database's clock, shared by every process: `now` only dates the rows.
  async claimDeliveries (limit: number, _now: number, leaseMs: number, cap?: EndpointCap): Promise<DeliveryClaim[]> {
    return this.walkingTransaction((tx) => this.webhooks.claim(tx, limit, leaseMs, cap))
  }

  async settleDeliveries (outcomes: DeliveryOutcome[], now: number, circuit = DEFAULT_CIRCUIT): Promise<number> {
    return this.transaction((tx, transitions) => this.webhooks.settle(tx, transitions, outcomes, now, circuit))
  }

  async releaseDeliveries (claims: DeliveryClaim[], now: number): Promise<number> {
    return this.transaction((tx, transitions) => this.webhooks.release(tx, transitions, claims, now))
  }

  async nextDeliveryIn (): Promise<number | null> {
    return this.webhooks.nextIn()
  }

  async close (): Promise<void> {
    if (this.pool.ending) return
    await this.purges.close()
    if (this.reloadTimer) clearTimeout(this.reloadTimer)
    // Closing waits for the server to see each connection end; one that stops answering never
    // does, and would hold a shutdown up: past the deadline the process may exit regardless.
    await Promise.race([
      Promise.all([this.listener.close(), this.pool.end()]),
      sleep(this.timeoutMs, undefined, { ref: false })
    ])
  }
}

/** The IndexedCalls whose statements run in a walkingTransaction (or, nextAvailableAt, under its settings). */
const WALKING_CALLS = new Set<IndexedCall[0]>(['list', 'claim', 'nextAvailableAt', 'claimDeliveries', 'sweepOrders', 'sweepDeliveries', 'deleteUserOrders'])

function indexedQuery (call: Exclude<IndexedCall, ['claimDeliveries', ...unknown[]]>): pg.QueryConfig {
  switch (call[0]) {
    case 'list': return listQuery(call[1])
    case 'idsByStatus': return idsQuery(call[1], call[2], call[3] ?? 0)
    case 'claim': return claimQuery(call[1], call[2], call[3], 'a token', call[4])
    case 'nextAvailableAt': return { text: SQL.nextAvailable }
    case 'retryFailed': return failedChunkQuery(call[1], call[3] ?? 0)
    case 'nextDeliveryIn': return { text: SQL.nextDelivery }
    case 'deliveries': return deliveriesQuery(call[1], call[2])
    case 'sweepOrders': return sweepOrdersQuery(call[1], call[2], call[3])
    case 'sweepDeliveries': return sweepDeliveriesQuery(call[1], call[2])
    case 'deleteUserOrders': return deleteUserOrdersQuery(call[1], call[2])
  }
}
