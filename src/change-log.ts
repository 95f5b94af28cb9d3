import type { OrderStatus } from './order.ts'
import type { OrderChange } from './store.ts'

/** The status changes one transaction made, announced once it has committed. */
export class ChangeLog {
  readonly changes: OrderChange[] = []

  /** Disabled when nobody listens: the hot path then builds no objects. */
  constructor (private readonly enabled: boolean) {}

  add (row: Omit<OrderChange, 'status' | 'at'>, status: OrderStatus, at: number): void {
    if (!this.enabled) return
    this.changes.push({
      order_id: row.order_id, status, at, attempts: row.attempts, created_at: row.created_at, processing_started_at: row.processing_started_at
    })
  }
}
