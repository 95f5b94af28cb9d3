import type { NewOrder, OrderRecord, OrderStatus } from '../order.ts'
import type { WebhookStore } from './webhook-store.ts'

export type CreateResult = 'created' | 'exists' | 'conflict'
/** The order after the attempt (undefined when there is none), and whether it was cancelled. */
export interface CancelResult { cancelled: boolean, order: OrderRecord | undefined }
/** The order after the attempt (undefined when there is none), and whether it was Failed and so went back to Pending. */
export interface RetryResult { retried: boolean, order: OrderRecord | undefined }

/** One transaction of a bulk retry: how many Failed orders went back to Pending, and where the next one starts. */
export interface RetriedChunk {
  retried: number
  /** Sequence number of the last order retried when more Failed orders may follow, else null. */
  lastSeq: number | null
}

/** The order after the attempt (undefined when there is none), and whether it was finished and so deleted. */
export interface DeleteResult { deleted: boolean, order: OrderRecord | undefined }

/** Why orders were deleted: their retention passed, or someone erased them (DELETE /orders...). */
export type DeleteReason = 'retention' | 'erasure'

/** The statuses an order ends in: only such orders are ever deleted. */
export const FINISHED_STATUSES = ['Completed', 'Cancelled', 'Failed'] as const satisfies readonly OrderStatus[]
export type FinishedStatus = typeof FINISHED_STATUSES[number]

export const PROCESSING_STATES = ['running', 'paused'] as const
/** Whether processors claim orders, and since when (epoch ms). */
export interface ProcessingState { state: typeof PROCESSING_STATES[number], since: number }
export type ProcessingStateListener = (state: ProcessingState) => void

export interface Overview { stats: OrderStats, processing: ProcessingState }

/** An order handed to one worker until its lease ends; only the holder of `token` may settle it. */
export interface Claim {
  order_id: string
  token: string
  attempts: number
  /** The order as stored once claimed: only from a claim that asked for it. */
  order?: OrderRecord
  /** The W3C traceparent of the request that created the order, when tracing was on then. */
  traceparent?: string | null
}

export type Outcome =
  /** `result`: what the attempt returned, as JSON text; absent or null for none. Kept with the completion. */
  | { claim: Claim, ok: true, result?: string | null }
  | { claim: Claim, ok: false, error: string, retryAt: number | null }

export const LIST_ORDERS = ['asc', 'desc'] as const
/** The order of a list: asc, oldest first; desc, newest first. */
export type ListOrder = typeof LIST_ORDERS[number]

export interface ListQuery {
  status?: OrderStatus
  userId?: number
  limit: number
  /** asc (the default) or desc. */
  order?: ListOrder
  /** Keyset position: the orders that come after this sequence number in the list's order; absent, from the first. */
  after?: number
}

/** The keyset position before the first order of a list in this order: every sequence number comes after it. */
export function keysetStart (order: ListOrder = 'asc'): number {
  return order === 'asc' ? 0 : Number.MAX_SAFE_INTEGER
}

export interface OrderPage {
  orders: OrderRecord[]
  /** Sequence number of the last order when more may follow, else null. */
  lastSeq: number | null
}

export interface IdPage {
  ids: string[]
  /** Sequence number of the last order listed when more may follow, else null. */
  lastSeq: number | null
}

/** A populate call's batch as recorded: entries 1..entries_done were handled (created, or counted as failures). */
export interface PopulateBatch {
  batch_id: string
  total_entries: number
  entries_done: number
  failure_count: number
  /** The first ids that already existed (at most LISTED_FAILURES); failure_count counts them all. */
  failed_ids: string[]
}

/** Running aggregates, kept in the same transaction as each state change. */
export interface OrderStats {
  counts: Record<OrderStatus, number>
  /** Orders that have started processing, and the sum of their waits (created -> started). */
  started: number
  pendingMs: number
  /** Sums over Completed orders of processing (started -> completed) and total times. */
  processingMs: number
  totalMs: number
}

/** One status change of one order, with what a consumer needs to time its stages. */
export interface OrderChange {
  order_id: string
  status: OrderStatus
  /** When the change was made (epoch ms). */
  at: number
  attempts: number
  created_at: number
  processing_started_at: number | null
}

/** Called after each committed transaction that changed the status of orders, in commit order. */
export type ChangeListener = (changes: OrderChange[]) => void

/** Called after new work became claimable, with the time it becomes claimable; maybe a little later, from another process. */
export type WorkListener = (availableAt: number) => void

/**
 * The store is the source of truth and the queue. Every method that changes state changes the
 * aggregates in the same transaction, so OrderStats always equals a recount.
 */
export interface OrderStore extends WebhookStore {
  /** `traceparent`: the creating request's trace context (tracing on), kept with the order for its attempts' spans. */
  create (order: NewOrder, now: number, availableAt: number, traceparent?: string): Promise<CreateResult>
  /** Inserts many orders in one transaction; returns the ids that already existed. */
  createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]>
  /**
   * Creates each order as create() does, all in one transaction: a result per order, in their
   * order. An id given twice: the second is compared with the first.
   */
  createEach (orders: NewOrder[], now: number, availableAt: number, traceparent?: string): Promise<CreateResult[]>
  get (orderId: string): Promise<OrderRecord | undefined>
  list (query: ListQuery): Promise<OrderPage>
  cancel (orderId: string, now: number): Promise<CancelResult>
  /**
   * Puts a Failed order back to Pending for a fresh run, claimable at once: no attempts, not
   * started; its last_error stays until the next outcome.
   */
  retry (orderId: string, now: number): Promise<RetryResult>
  /** Retries, as retry() does, up to `limit` Failed orders after the keyset position `after`, oldest first, in one transaction. */
  retryFailed (limit: number, now: number, after?: number): Promise<RetriedChunk>
  /**
   * Claims up to `limit` Pending orders available at `now`, oldest first, each for `leaseMs` from
   * now by the store's clock (on PostgreSQL the database's, shared by every process). `withOrders`:
   * each claim brings its order as stored once claimed (work that reads the order needs it).
   */
  claim (limit: number, now: number, leaseMs: number, withOrders?: boolean): Promise<Claim[]>
  /**
   * Renews the leases of claims still current (the heartbeat of their attempts): each ends `leaseMs`
   * from now by the store's clock. Returns the claims that are no longer current: settled, handed
   * back, or taken over by a recovery once their lease had ended (whose attempt's outcome will be
   * refused). A current claim whose order another transaction holds meanwhile may be left to the
   * next renewal; it is not among them.
   */
  extendLeases (claims: readonly Claim[], now: number, leaseMs: number): Promise<Claim[]>
  /** Applies outcomes whose claim is still current; returns how many were applied. */
  settle (outcomes: Outcome[], now: number): Promise<number>
  /** Hands unfinished claims back to Pending, available at once; the attempt does not count. */
  release (claims: Claim[], now: number): Promise<number>
  /**
   * Puts orders whose lease ended by the store's clock back to Pending, or Failed once they used
   * every attempt; never those of claims whose token is in `heldTokens` (the caller still works on them).
   */
  recoverExpired (now: number, maxAttempts: number, heldTokens: readonly string[]): Promise<number>
  /** The earliest time a Pending order becomes claimable, if any. */
  nextAvailableAt (): Promise<number | null>
  stats (): Promise<OrderStats>
  /** The aggregates and the processing state together, as /orders/metrics reports them: one query on PostgreSQL. */
  overview (): Promise<Overview>
  /** Ids of orders with this status, oldest first, after the keyset position `after`. */
  idsByStatus (status: OrderStatus, limit: number, after?: number): Promise<IdPage>
  /** Records a populate batch unless it exists; returns the batch as recorded (maybe with another total, maybe finished). */
  openBatch (batchId: string, totalEntries: number, now: number): Promise<PopulateBatch>
  /**
   * Creates the batch's next orders and records how far it got, in one transaction, only while the
   * batch is where `batch` says: otherwise (another call moved it) throws BatchConflictError and
   * writes nothing. Returns the batch as it now is.
   */
  populateChunk (batch: PopulateBatch, orders: NewOrder[], now: number, availableAt: number): Promise<PopulateBatch>
  /**
   * Deletes, in one transaction, up to `limit` orders in `status` that finished (their last update)
   * before `before`, oldest first; returns how many. The aggregates lose them in that transaction.
   * On PostgreSQL a batch runs only while no other process is sweeping (it then returns 0).
   */
  sweepOrders (status: FinishedStatus, before: number, limit: number): Promise<number>
  /** Deletes up to `limit` delivered or failed webhook deliveries last updated before `before`, oldest first; pending ones never. */
  sweepDeliveries (before: number, limit: number): Promise<number>
  /** Deletes up to `limit` records of populate batches that finished before `before`. */
  sweepBatches (before: number, limit: number): Promise<number>
  /** Erases a finished order and every webhook delivery of it (their payloads hold it); a Pending or Processing one stays. */
  deleteOrder (orderId: string): Promise<DeleteResult>
  /** Records that every finished order of one customer is to be erased: kept, across restarts, until the erasure's last batch. Asked again while waiting: once. */
  requestErasure (userId: number, now: number): Promise<void>
  /** Up to `limit` customers whose erasure waits, lowest id first. */
  erasures (limit: number): Promise<number[]>
  /**
   * Erases, as deleteOrder() does, up to `limit` finished orders of a customer whose erasure waits,
   * in one transaction; returns how many. A batch that comes back short ends the erasure in that
   * transaction. None (0) when no erasure of theirs waits, or on PostgreSQL while another process
   * is erasing them.
   */
  deleteUserOrders (userId: number, limit: number): Promise<number>
  /** Bytes the store takes on disk (SQLite: its files, the WAL included; PostgreSQL: its tables with their indexes and TOAST). */
  diskBytes (): Promise<number>
  /** Whether processors claim orders: kept in the store, for every process, across restarts. */
  processingState (): Promise<ProcessingState>
  /**
   * Pauses or resumes claiming; returns the state as it now is. Setting the state it already has
   * changes nothing (`since` stays). Once it resolves, no claim takes an order while paused, in any
   * process. `since` is read from `clock` once the change holds, after the claims under way have
   * committed: no order it let through started after it (by the clocks of the processes, which must agree).
   */
  setProcessingState (state: ProcessingState['state'], clock: () => number): Promise<ProcessingState>
  /** A secret made once per database, to sign list cursors. */
  cursorKey (): Promise<string>
  /** Commits a one-row write: resolves only while the store takes writes (the readiness check). */
  ping (now: number): Promise<void>
  /** PostgreSQL only: the fraction of its notification queue in use (0 to 1); full, every write fails. */
  notificationQueueUsage?: () => Promise<number>
  onWork (listener: WorkListener): () => void
  /** Listens for changes of the processing state, made by any process (on PostgreSQL maybe a little later). */
  onProcessingState (listener: ProcessingStateListener): () => void
  /** Listens for changes to some statuses (all by default). */
  onChanges (listener: ChangeListener, statuses?: readonly OrderStatus[]): () => void
  close (): Promise<void>
}

/** The store methods whose reads must come from an index, in time proportional to their limit. */
export type IndexedRead = 'list' | 'idsByStatus' | 'claim' | 'nextAvailableAt' | 'retryFailed' | 'claimDeliveries' | 'nextDeliveryIn' | 'deliveries' |
  'sweepOrders' | 'sweepDeliveries' | 'deleteUserOrders'

/** A call of one of them, as its name and arguments: each store can show the plan its database picks for it. */
export type IndexedCall = { [M in IndexedRead]: [M, ...Parameters<OrderStore[M]>] }[IndexedRead]
