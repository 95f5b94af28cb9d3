import { randomUUID } from 'node:crypto'
import type Database from 'better-sqlite3'
import type { OrderRecord } from '../../order.ts'
import type { DeleteReason } from '../order-store.ts'
import type { DeletedRow, Transitions } from '../transitions.ts'
import type { ChangedDelivery } from '../delivery-transitions.ts'
import { WebhookSubscriptions } from '../webhook-events.ts'
import {
  attemptsUnderWay, CLAIM_WINDOW, circuitChanges, countsByEndpoint, noDeliveries, roomOf, type CircuitPolicy, type DeliveryClaim, type DeliveryOutcome, type DeliveryPage, type DeliveryQuery, type DeliveryRecord,
  type DeliveryStatus, type EndpointCap, type ErasedDelivery, type EndpointRecord, type NewDelivery, type NewEndpoint, type WebhookEvent
} from '../webhook-store.ts'
import type { SQL } from './statements.ts'

type Statements = Record<keyof typeof SQL, Database.Statement>
type EndpointRow = Omit<EndpointRecord, 'events' | 'counts'> & { events: string }
type SettledRow = ChangedDelivery & { order_id: string | null }
type RemovedRow = ChangedDelivery & { status: DeliveryStatus }

/**
 * The webhook half of the SQLite store: endpoints, and the deliveries recorded with each status
 * change. Every method that writes runs inside the store's group-commit transaction, with its
 * Transitions; like every write there, it may run twice and changes nothing outside the database.
 */
export class SqliteWebhooks {
  readonly subscriptions = new WebhookSubscriptions()

  constructor (private readonly sql: Statements, private readonly getOrder: (orderId: string) => OrderRecord | undefined) {
    this.reload()
  }

  /** Reads which endpoints want which statuses (at start and after a commit that changed endpoints). */
  reload (): void {
    const rows = this.sql.subscriptions.all() as Array<{ id: string, events: string }>
    this.subscriptions.load(rows.map((row) => ({ id: row.id, events: JSON.parse(row.events) as WebhookEvent[] })))
  }

  /**
   * Records the deliveries of the status changes from the `from`th on that endpoints want, each
   * with its order as it is now; returns where the next call starts. Called after each write of a
   * group commit: a write changes an order once, but a later write of the same transaction may
   * change it again (a create, then a claim), and the event is the order as of its own change.
   */
  record (transitions: Transitions, from: number, now: number): number {
    const all = transitions.log.changes
    if (all.length === from || this.subscriptions.statuses.size === 0) return all.length
    const changes = this.subscriptions.wanted(all.slice(from))
    if (changes.length > 0) {
      const orders = new Map<string, OrderRecord>()
      for (const { order_id: orderId } of changes) {
        if (orders.has(orderId)) continue
        const order = this.getOrder(orderId)
        if (order) orders.set(orderId, order)
      }
      this.insert(transitions, this.subscriptions.deliveries(changes, orders), now)
    }
    return all.length
  }

  /**
   * Records the order.deleted deliveries of these deleted orders that endpoints want; one waits for
   * an attempt of its order under way to its endpoint (deleted by an erasure), so as not to overtake it.
   */
  recordDeletions (transitions: Transitions, rows: readonly DeletedRow[], reason: DeleteReason, now: number, erased: readonly ErasedDelivery[] = []): void {
    if (rows.length > 0) this.insert(transitions, this.subscriptions.deletions(rows, reason, now), now)
    for (const attempt of attemptsUnderWay(erased)) {
      this.sql.holdDeletions.run({ endpointId: attempt.endpoint_id, orderId: attempt.order_id, until: attempt.leased_until })
    }
  }

  /** Writes the transaction's delivery counts, once its writes are done. */
  finish (transitions: Transitions): void {
    for (const [endpointId, name, amount] of transitions.deliveries.entries()) this.sql.addDeliveryCount.run(endpointId, name, amount)
  }

  private insert (transitions: Transitions, deliveries: NewDelivery[], now: number): void {
    for (const delivery of deliveries) this.sql.insertDelivery.run({ ...delivery, now })
    transitions.deliveries.queued(deliveries)
  }

  createEndpoint (transitions: Transitions, endpoint: NewEndpoint, now: number, maxEndpoints: number): EndpointRecord | null {
    if ((this.sql.countEndpoints.get() as { n: number }).n >= maxEndpoints) return null
    this.sql.insertEndpoint.run({ ...endpoint, events: JSON.stringify(endpoint.events), now })
    transitions.deliveries.endpointsChanged = true
    return { ...endpoint, created_at: now, counts: noDeliveries(), last_error: null, last_error_at: null, consecutive_failures: 0, circuit_open_until: null }
  }

  endpoints (): EndpointRecord[] {
    return this.withCounts(this.sql.endpoints.all() as EndpointRow[])
  }

  endpoint (id: string): EndpointRecord | undefined {
    const row = this.sql.endpoint.get(id) as EndpointRow | undefined
    return row && this.withCounts([row])[0]
  }

  private withCounts (rows: EndpointRow[]): EndpointRecord[] {
    const countsOf = countsByEndpoint(this.sql.endpointCounts.all() as Array<{ endpoint_id: string, name: DeliveryStatus, value: number }>)
    return rows.map((row) => ({ ...row, events: JSON.parse(row.events) as WebhookEvent[], counts: countsOf(row.id) }))
  }

  /** Its deliveries are left to purge: deleting 250,000 in one statement held the event loop for seconds. */
  deleteEndpoint (transitions: Transitions, id: string, now: number): boolean {
    if (this.sql.deleteEndpoint.run(id).changes === 0) return false
    this.sql.deleteEndpointCounts.run(id)
    this.sql.insertPurge.run(id, now)
    transitions.deliveries.endpointsChanged = true
    return true
  }

  /**
   * Deletes up to `limit` deliveries of the oldest deleted endpoint; once fewer are left, forgets
   * it, with the counts a settle may have written for it since. False when no endpoint is left to purge.
   */
  purge (limit: number): boolean {
    const next = this.sql.nextPurge.get() as { endpoint_id: string } | undefined
    if (!next) return false
    if (this.sql.purgeDeliveries.run(next.endpoint_id, limit).changes < limit) {
      this.sql.deleteEndpointCounts.run(next.endpoint_id)
      this.sql.endPurge.run(next.endpoint_id)
    }
    return true
  }

  queue (transitions: Transitions, delivery: NewDelivery, now: number): boolean {
    if (this.sql.endpoint.get(delivery.endpoint_id) === undefined) return false
    this.insert(transitions, [delivery], now)
    return true
  }

  redeliver (transitions: Transitions, endpointId: string, now: number): number | undefined {
    if (this.sql.endpoint.get(endpointId) === undefined) return undefined
    const count = this.sql.redeliver.run({ endpointId, now }).changes
    transitions.deliveries.redelivered(endpointId, count)
    return count
  }

  deliveries (endpointId: string, { status, limit, before = Number.MAX_SAFE_INTEGER }: DeliveryQuery): DeliveryPage {
    const rows = this.sql.deliveries.all({ endpointId, status, before, limit: limit + 1 }) as DeliveryRecord[]
    const deliveries = rows.slice(0, limit)
    return { deliveries, lastSeq: rows.length > limit ? (deliveries.at(-1) as DeliveryRecord).seq : null }
  }

  /**
   * Claims the due deliveries that are the earliest pending one of their order for their endpoint;
   * a later one is put off until that one is due again or its lease ends (its settle makes the next due at once).
   * Of an endpoint whose circuit cool-down has passed, one only: the probe.
   */
  claim (limit: number, now: number, leaseMs: number, cap?: EndpointCap): DeliveryClaim[] {
    const token = randomUUID()
    const due = this.sql.dueDeliveries.all({ now, limit: limit * CLAIM_WINDOW }) as Array<{ seq: number, endpoint_id: string, open_until: number | null, blocked_until: number | null }>
    const claims: DeliveryClaim[] = []
    const targets = new Map<string, DeliveryClaim['target']>()
    const roomFor = roomOf(cap, limit)
    const taken = new Map<string, number>()
    for (const { seq, endpoint_id: endpointId, open_until: openUntil, blocked_until: blockedUntil } of due) {
      if (blockedUntil !== null) {
        this.sql.putOffDelivery.run({ seq, at: Math.max(blockedUntil, now + leaseMs) })
        continue
      }
      const endpointTaken = taken.get(endpointId) ?? 0
      const probe = openUntil !== null
      if (claims.length >= limit || endpointTaken >= (probe ? Math.min(1, roomFor(endpointId)) : roomFor(endpointId))) continue
      taken.set(endpointId, endpointTaken + 1)
      const row = this.sql.claimDelivery.get({ seq, token, leaseUntil: now + leaseMs }) as Omit<DeliveryClaim, 'token' | 'target'>
      if (probe) this.sql.probeEndpoint.run({ endpointId, leaseUntil: now + leaseMs })
      if (!targets.has(row.endpoint_id)) targets.set(row.endpoint_id, (this.sql.deliveryTarget.get(row.endpoint_id) as DeliveryClaim['target'] | undefined) ?? null)
      claims.push({ ...row, token, target: targets.get(row.endpoint_id) ?? null, probe })
    }
    return claims
  }

  settle (transitions: Transitions, outcomes: DeliveryOutcome[], now: number, circuit: CircuitPolicy): number {
    const settled: Record<DeliveryOutcome['kind'], SettledRow[]> = { delivered: [], retry: [], failed: [], discarded: [] }
    const errors = new Map<string, string>()
    const attempts: Array<{ endpoint_id: string, kind: DeliveryOutcome['kind'], probe: boolean }> = []
    /** Claims whose delivery is no longer theirs: erased with its order, say, whose order.deleted waits for this attempt. */
    const gone: DeliveryClaim[] = []
    for (const outcome of outcomes) {
      const claim = { seq: outcome.claim.seq, token: outcome.claim.token, now }
      let row: SettledRow | undefined
      if (outcome.kind === 'delivered') row = this.sql.delivered.get({ ...claim, statusCode: outcome.statusCode }) as SettledRow | undefined
      else if (outcome.kind === 'discarded') row = this.sql.discardDelivery.get(claim) as SettledRow | undefined
      else {
        const failure = { ...claim, error: outcome.error, statusCode: outcome.statusCode }
        row = (outcome.kind === 'retry'
          ? this.sql.retryDelivery.get({ ...failure, retryInMs: outcome.retryInMs })
          : this.sql.failDelivery.get(failure)) as SettledRow | undefined
        if (row) errors.set(row.endpoint_id, outcome.error)
      }
      if (row) {
        settled[outcome.kind].push(row)
        attempts.push({ endpoint_id: row.endpoint_id, kind: outcome.kind, probe: outcome.claim.probe === true })
      } else {
        gone.push(outcome.claim)
      }
    }
    for (const [endpointId, error] of errors) this.sql.endpointError.run({ endpointId, error, now })
    for (const change of circuitChanges(attempts)) {
      this.sql.endpointCircuit.run({
        ...circuit, endpointId: change.endpoint_id, now, succeeded: Number(change.succeeded), probeFailed: Number(change.probeFailed), failed: change.failures
      })
      // Its other deliveries, waiting while it was open, are due.
      if (change.probeSucceeded) transitions.deliveries.madeDue(1)
    }
    transitions.deliveries.delivered(settled.delivered)
    transitions.deliveries.failed(settled.failed)
    transitions.deliveries.discarded(settled.discarded)
    let promoted = 0
    for (const { endpoint_id: endpointId, order_id: orderId } of [...settled.delivered, ...settled.failed, ...settled.discarded, ...gone]) {
      if (orderId !== null) promoted += this.sql.promoteNext.run({ endpointId, orderId, now }).changes
    }
    transitions.deliveries.madeDue(promoted)
    return Object.values(settled).reduce((sum, rows) => sum + rows.length, 0)
  }

  release (transitions: Transitions, claims: DeliveryClaim[], now: number): number {
    let released = 0
    for (const { seq, token } of claims) released += this.sql.releaseDelivery.run({ seq, token, now }).changes
    transitions.deliveries.madeDue(released)
    return released
  }

  /** Deletes settled deliveries last updated before `before`, oldest first; returns how many. */
  sweep (transitions: Transitions, before: number, limit: number): number {
    const rows = this.sql.sweepDeliveries.all({ before, limit }) as RemovedRow[]
    transitions.deliveries.removed(rows)
    return rows.length
  }

  /** Deletes every delivery of an erased order, in any state: a claimed one's settle then finds nothing. */
  deleteOrderDeliveries (transitions: Transitions, orderId: string): ErasedDelivery[] {
    const erased = this.sql.deleteOrderDeliveries.all(orderId) as ErasedDelivery[]
    transitions.deliveries.removed(erased)
    return erased
  }

  nextIn (now: number): number | null {
    return (this.sql.nextDelivery.get({ now }) as { delay: number | null }).delay
  }

  /** What claimDeliveries, nextDeliveryIn and deliveries run: a statement and its parameters. */
  query (call: ['claimDeliveries', number, number, number, EndpointCap?] | ['nextDeliveryIn', number] | ['deliveries', string, DeliveryQuery] | ['sweepDeliveries', number, number]): [Database.Statement, Record<string, unknown>] {
    switch (call[0]) {
      case 'sweepDeliveries': return [this.sql.sweepDeliveries, { before: call[1], limit: call[2] }]
      case 'claimDeliveries': return [this.sql.dueDeliveries, { now: call[2], limit: call[1] * CLAIM_WINDOW }]
      case 'nextDeliveryIn': return [this.sql.nextDelivery, { now: call[1] }]
      case 'deliveries': return [this.sql.deliveries, { endpointId: call[1], status: call[2].status, before: call[2].before ?? Number.MAX_SAFE_INTEGER, limit: call[2].limit + 1 }]
    }
  }
}
