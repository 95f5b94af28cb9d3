import type { DeliveryStatus } from './webhook-store.ts'

/** A delivery row as the statements that change its state return it. */
export interface ChangedDelivery { endpoint_id: string }

/**
 * What the delivery changes of one transaction do besides their SQL: the per-endpoint counts
 * (pending, delivered, failed) behind GET /webhooks/:id, written at its end like the order
 * aggregates, and whether deliverers should look for due deliveries once it commits.
 */
export class DeliveryTransitions {
  /** endpoint id -> state -> change */
  readonly counts = new Map<string, Map<DeliveryStatus, number>>()
  /** Deliveries became due: new events, a redelivery, a hand-back, a next event of an order. */
  due = false
  /** Endpoints were created or deleted: every process reloads which statuses they want once it commits. */
  endpointsChanged = false

  private add (endpointId: string, status: DeliveryStatus, amount: number): void {
    if (amount === 0) return
    let counts = this.counts.get(endpointId)
    if (!counts) this.counts.set(endpointId, counts = new Map())
    counts.set(status, (counts.get(status) ?? 0) + amount)
  }

  private moved (rows: readonly ChangedDelivery[], from: DeliveryStatus, to: DeliveryStatus | null): void {
    for (const row of rows) {
      this.add(row.endpoint_id, from, -1)
      if (to !== null) this.add(row.endpoint_id, to, 1)
    }
  }

  /** New events, due at once. */
  queued (rows: readonly ChangedDelivery[]): void {
    for (const row of rows) this.add(row.endpoint_id, 'pending', 1)
    if (rows.length > 0) this.due = true
  }

  delivered (rows: readonly ChangedDelivery[]): void {
    this.moved(rows, 'pending', 'delivered')
  }

  /** Given up after the last attempt. */
  failed (rows: readonly ChangedDelivery[]): void {
    this.moved(rows, 'pending', 'failed')
  }

  /** Dropped: their endpoint was deleted while they were pending. */
  discarded (rows: readonly ChangedDelivery[]): void {
    this.moved(rows, 'pending', null)
  }

  /** Deleted in any state (retention, or the erasure of their order). */
  removed (rows: ReadonlyArray<ChangedDelivery & { status: DeliveryStatus }>): void {
    for (const row of rows) this.add(row.endpoint_id, row.status, -1)
  }

  /** Failed deliveries of one endpoint pending again, due at once. */
  redelivered (endpointId: string, count: number): void {
    this.add(endpointId, 'failed', -count)
    this.add(endpointId, 'pending', count)
    if (count > 0) this.due = true
  }

  /** Pending deliveries made due at once: handed back, or the next event of an order whose earlier one was settled. */
  madeDue (count: number): void {
    if (count > 0) this.due = true
  }

  /** The count changes as [endpoint id, state, change], sorted, so that rows are always locked in one order. */
  entries (): Array<[string, DeliveryStatus, number]> {
    const entries: Array<[string, DeliveryStatus, number]> = []
    for (const [endpointId, counts] of this.counts) {
      for (const [status, amount] of counts) if (amount !== 0) entries.push([endpointId, status, amount])
    }
    return entries.sort(([a, s], [b, t]) => (a === b ? (s < t ? -1 : 1) : a < b ? -1 : 1))
  }

  /** Adds what another write of the same transaction did, after this. */
  merge (other: DeliveryTransitions): void {
    for (const [endpointId, counts] of other.counts) {
      for (const [status, amount] of counts) this.add(endpointId, status, amount)
    }
    this.due ||= other.due
    this.endpointsChanged ||= other.endpointsChanged
  }
}
