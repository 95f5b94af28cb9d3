import { randomBytes } from 'node:crypto'
import { toOrder, type OrderRecord, type OrderStatus } from '../order.ts'
import type { DeleteReason, OrderChange } from './order-store.ts'
import type { DeletedRow } from './transitions.ts'
import type { NewDelivery, WebhookEvent } from './webhook-store.ts'

/** A `webhook-id`: unique across messages, the same on every attempt of one. */
export function newDeliveryId (): string {
  return `msg_${randomBytes(16).toString('base64url')}`
}

/** The body of an event, exactly as it is sent: `{"type", "timestamp", "data"}`. */
export function eventBody (type: string, at: number, data: unknown): string {
  return JSON.stringify({ type, timestamp: new Date(at).toISOString(), data })
}

/** The event type of an order's deletion, by retention or erasure. */
export const ORDER_DELETED = 'order.deleted'

/** The event type of a change to `status`: order.completed and the like. */
export function orderEventType (status: OrderStatus): string {
  return `order.${status.toLowerCase()}`
}

/**
 * Which endpoints want which statuses, kept in memory by each store so that a status change no
 * endpoint wants costs nothing more than a set lookup; reloaded whenever endpoints change.
 */
export class WebhookSubscriptions {
  private byStatus = new Map<WebhookEvent, string[]>()
  /** The statuses at least one endpoint wants. */
  statuses: ReadonlySet<OrderStatus> = new Set()

  load (endpoints: ReadonlyArray<{ id: string, events: readonly WebhookEvent[] }>): void {
    const byStatus = new Map<WebhookEvent, string[]>()
    for (const { id, events } of endpoints) {
      for (const status of events) byStatus.set(status, [...(byStatus.get(status) ?? []), id])
    }
    this.byStatus = byStatus
    this.statuses = new Set([...byStatus.keys()].filter((event): event is OrderStatus => event !== 'Deleted'))
  }

  /** The changes some endpoint wants (none at all, most of the time: then nothing else is done). */
  wanted (changes: readonly OrderChange[]): OrderChange[] {
    if (this.statuses.size === 0) return []
    return changes.filter((change) => this.statuses.has(change.status))
  }

  /**
   * The deliveries of these changes, one per change and endpoint that wants it, with the order as
   * GET returns it (`orders`: the changed orders, read in the same transaction).
   */
  deliveries (changes: readonly OrderChange[], orders: ReadonlyMap<string, OrderRecord>): NewDelivery[] {
    const deliveries: NewDelivery[] = []
    for (const change of changes) {
      const order = orders.get(change.order_id)
      if (!order) continue
      const type = orderEventType(change.status)
      const payload = eventBody(type, change.at, toOrder(order))
      for (const endpointId of this.byStatus.get(change.status) ?? []) {
        deliveries.push({ id: newDeliveryId(), endpoint_id: endpointId, order_id: change.order_id, event_type: type, payload, created_at: change.at })
      }
    }
    return deliveries
  }

  /**
   * The order.deleted deliveries of orders just deleted, for the endpoints that want them. Only ids:
   * an erasure removes the customer's data, and the event must not carry it on.
   */
  deletions (rows: readonly DeletedRow[], reason: DeleteReason, at: number): NewDelivery[] {
    const endpoints = this.byStatus.get('Deleted')
    // Most of the time no endpoint wants them: a sweep batch of 1,000 then builds no event.
    if (!endpoints) return []
    const deliveries: NewDelivery[] = []
    for (const row of rows) {
      const payload = eventBody(ORDER_DELETED, at, { order_id: row.order_id, user_id: row.user_id, reason: reason === 'erasure' ? 'erased' : 'retention' })
      for (const endpointId of endpoints) {
        deliveries.push({ id: newDeliveryId(), endpoint_id: endpointId, order_id: row.order_id, event_type: ORDER_DELETED, payload, created_at: at })
      }
    }
    return deliveries
  }
}
