import { ORDER_STATUSES, type OrderStatus } from '../order.ts'
import type { ChangeListener, OrderChange } from './order-store.ts'

const ALL: ReadonlySet<OrderStatus> = new Set(ORDER_STATUSES)

/** What a statement that changed an order's status returns about it. */
export type ChangedRow = Omit<OrderChange, 'status' | 'at'>

/** The status changes one transaction made, announced once it has committed. */
export class ChangeLog {
  readonly changes: OrderChange[] = []
  /** Every order whose status changed, whether or not anyone listens: what a cache of orders forgets. */
  readonly orderIds: string[] = []

  /** Only changes to statuses someone listens for are kept: the hot path builds no other objects. */
  constructor (readonly wanted: ReadonlySet<OrderStatus> = ALL) {}

  add (row: ChangedRow, status: OrderStatus, at: number): void {
    this.orderIds.push(row.order_id)
    if (!this.wanted.has(status)) return
    this.changes.push({
      order_id: row.order_id, status, at, attempts: row.attempts, created_at: row.created_at, processing_started_at: row.processing_started_at
    })
  }

  /** Adds the changes another log recorded, after these. */
  append (other: ChangeLog): void {
    for (const change of other.changes) this.changes.push(change)
    for (const id of other.orderIds) this.orderIds.push(id)
  }
}

/** Listeners of status changes, each for some statuses. */
export class ChangeListeners {
  private readonly listeners = new Map<ChangeListener, ReadonlySet<OrderStatus>>()
  private union: ReadonlySet<OrderStatus> = new Set()

  add (listener: ChangeListener, statuses: readonly OrderStatus[]): () => void {
    this.listeners.set(listener, new Set(statuses))
    this.union = new Set([...this.listeners.values()].flatMap((s) => [...s]))
    return () => {
      this.listeners.delete(listener)
      this.union = new Set([...this.listeners.values()].flatMap((s) => [...s]))
    }
  }

  /** The statuses at least one listener wants. */
  get wanted (): ReadonlySet<OrderStatus> {
    return this.union
  }

  emit (changes: OrderChange[]): void {
    for (const [listener, statuses] of this.listeners) {
      const relevant = statuses.size === ALL.size ? changes : changes.filter((c) => statuses.has(c.status))
      if (relevant.length > 0) listener(relevant)
    }
  }
}
