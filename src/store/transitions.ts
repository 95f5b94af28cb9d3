import { stageDurations, type OrderRecord, type OrderStatus } from '../order.ts'
import { ChangeLog, type ChangedRow } from './change-log.ts'
import { DeliveryTransitions } from './delivery-transitions.ts'
import type { Claim } from './order-store.ts'
import { StatsDelta } from './stats-delta.ts'

/** A row a claim statement changed to Processing, as it then is: it has started. */
export type ClaimedRow = ChangedRow & { processing_started_at: number }
/** A row that is Pending and claimable from `available_at`: new, retried later, or taken back. */
export type QueuedRow = ChangedRow & { available_at: number }

/** A row a delete statement removed, as it was: its status and times leave the aggregates. */
export type DeletedRow = ChangedRow & { user_id: number, status: OrderStatus, completed_at: number | null }

/**
 * What the status changes of one transaction do besides their SQL: the running aggregates behind
 * /orders/metrics (StatsDelta), the change events announced once it commits (ChangeLog), and the
 * wake-up of processors when it made work claimable. Each store runs its own statements and hands
 * the rows they changed to the method named for the transition, so the rule "the aggregates equal
 * a recount of the orders" is written here once, for both stores.
 *
 * Status moves: Pending -> Processing (claimed) -> Completed, or -> Pending (retried later,
 * released, or recovered when its lease ended) or -> Failed; Pending -> Cancelled; Failed ->
 * Pending (requeued for a fresh run).
 */
export class Transitions {
  readonly delta = new StatsDelta()
  readonly log: ChangeLog
  /** What the transaction did to webhook deliveries (their counts, whether some became due). */
  readonly deliveries = new DeliveryTransitions()
  /** The earliest time work this transaction made claimable becomes so; Infinity when it made none. */
  wakeAt = Infinity

  /** `wanted`: the statuses whose changes someone listens for; only those build change events. */
  constructor (wanted?: ReadonlySet<OrderStatus>) {
    this.log = new ChangeLog(wanted)
  }

  private queued (rows: readonly QueuedRow[]): void {
    for (const row of rows) if (row.available_at < this.wakeAt) this.wakeAt = row.available_at
  }

  /** New orders: Pending, never attempted. */
  created (rows: readonly QueuedRow[]): void {
    this.delta.add('Pending', rows.length)
    for (const row of rows) this.log.add(row, 'Pending', row.created_at)
    this.queued(rows)
  }

  /** Rows that moved from one status to another at `at`, and that is all the change does. */
  private moved (rows: readonly ChangedRow[], from: OrderStatus, to: OrderStatus, at: number): void {
    this.delta.move(from, to, rows.length)
    for (const row of rows) this.log.add(row, to, at)
  }

  cancelled (rows: readonly ChangedRow[], at: number): void {
    this.moved(rows, 'Pending', 'Cancelled', at)
  }

  /** Claimed for an attempt; a first attempt starts the order, and its wait counts once. */
  claimed (rows: readonly ClaimedRow[], at: number): void {
    this.delta.move('Pending', 'Processing', rows.length)
    for (const row of rows) {
      if (row.attempts === 1) this.delta.add('started', 1).add('pending_ms', stageDurations(row, null).pending as number)
      this.log.add(row, 'Processing', at)
    }
  }

  /** Completed at `at`: its processing time and its time in all count. */
  completed (rows: readonly ChangedRow[], at: number): void {
    this.delta.move('Processing', 'Completed', rows.length)
    for (const row of rows) {
      const { processing, total } = stageDurations(row, at)
      this.delta.add('processing_ms', processing ?? 0).add('total_ms', total as number)
      this.log.add(row, 'Completed', at)
    }
  }

  /** An attempt failed, or its lease ended, with attempts left: Pending again from `available_at`. */
  retried (rows: readonly QueuedRow[], at: number): void {
    this.moved(rows, 'Processing', 'Pending', at)
    this.queued(rows)
  }

  /** The last attempt failed, or its lease ended. */
  failed (rows: readonly ChangedRow[], at: number): void {
    this.moved(rows, 'Processing', 'Failed', at)
  }

  /**
   * Claims handed back unfinished, from each row as it was while claimed: the attempt does not
   * count, undoing a first one un-starts the order, and it is claimable again at once.
   */
  released (rows: readonly ClaimedRow[], at: number): void {
    this.delta.move('Processing', 'Pending', rows.length)
    for (const row of rows) {
      const first = row.attempts === 1
      if (first) this.delta.add('started', -1).add('pending_ms', -(stageDurations(row, null).pending as number))
      this.log.add({ ...row, attempts: row.attempts - 1, processing_started_at: first ? null : row.processing_started_at }, 'Pending', at)
    }
    if (rows.length > 0) this.wakeAt = Math.min(this.wakeAt, at)
  }

  /**
   * Failed orders sent back for a fresh run (POST /orders/:id/retry), from each row as it was while
   * Failed: the run that failed no longer counts as started, so its wait leaves the sums; the order
   * is new again (no attempts, not started) and claimable at once.
   */
  requeued (rows: readonly ChangedRow[], at: number): void {
    this.delta.move('Failed', 'Pending', rows.length)
    for (const row of rows) {
      const { pending } = stageDurations(row, null)
      if (pending !== null) this.delta.add('started', -1).add('pending_ms', -pending)
      this.log.add({ ...row, attempts: 0, processing_started_at: null }, 'Pending', at)
    }
    if (rows.length > 0) this.wakeAt = Math.min(this.wakeAt, at)
  }

  /**
   * Orders deleted (retention or erasure), each as it was: it leaves its status's count and every
   * sum it was in (a started order's wait, a Completed order's processing and total times), so the
   * aggregates stay a recount of the orders stored. No change event: no status is entered.
   */
  deleted (rows: readonly DeletedRow[]): void {
    for (const row of rows) {
      this.delta.add(row.status, -1)
      const { pending, processing, total } = stageDurations(row, row.status === 'Completed' ? row.completed_at : null)
      if (pending !== null) this.delta.add('started', -1).add('pending_ms', -pending)
      if (total !== null) this.delta.add('processing_ms', -(processing ?? 0)).add('total_ms', -total)
      this.log.orderIds.push(row.order_id)
    }
  }

  /** Adds what another write of the same transaction did, after this. */
  merge (other: Transitions): void {
    this.delta.merge(other.delta)
    this.log.append(other.log)
    this.deliveries.merge(other.deliveries)
    this.wakeAt = Math.min(this.wakeAt, other.wakeAt)
  }
}

/** The claims a claim statement's rows stand for, all under one token; with their orders (the same rows, whole) when asked for. */
export function claimsOf (rows: ReadonlyArray<ClaimedRow & { traceparent?: string | null }>, token: string, orders?: readonly OrderRecord[]): Claim[] {
  return rows.map((row, i) => {
    const claim: Claim = orders
      ? { order_id: row.order_id, token, attempts: row.attempts, order: orders[i] as OrderRecord }
      : { order_id: row.order_id, token, attempts: row.attempts }
    if (row.traceparent) claim.traceparent = row.traceparent
    return claim
  })
}
