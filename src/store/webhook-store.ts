import { ORDER_STATUSES } from '../order.ts'
import { BatchSweeper } from './batch-sweeper.ts'

/** What an endpoint may subscribe to: an order's change to a status, or its deletion (order.deleted). */
export const WEBHOOK_EVENTS = [...ORDER_STATUSES, 'Deleted'] as const
export type WebhookEvent = typeof WEBHOOK_EVENTS[number]

export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const
export type DeliveryStatus = typeof DELIVERY_STATUSES[number]

/** An endpoint as registered; `id` and `secret` are made by the caller. */
export interface NewEndpoint {
  id: string
  url: string
  events: WebhookEvent[]
  description: string | null
  secret: string
}

/** An endpoint as stored, with how many of its deliveries are in each state and its last failed attempt. */
export interface EndpointRecord extends NewEndpoint {
  created_at: number
  counts: Record<DeliveryStatus, number>
  last_error: string | null
  last_error_at: number | null
  /** Failed attempts in a row, counted up to CircuitPolicy.failures while the circuit is closed, then one per failed probe. */
  consecutive_failures: number
  /** Set while its circuit is open: until then (store's clock) its deliveries wait; from then on the next one is a probe. */
  circuit_open_until: number | null
}

/** One event for one endpoint: its id is the `webhook-id`, the same on every attempt. */
export interface DeliveryRecord {
  seq: number
  id: string
  endpoint_id: string
  /** null for a test event */
  order_id: string | null
  event_type: string
  status: DeliveryStatus
  attempts: number
  /** When it is tried next, by the store's clock (pending only). */
  next_attempt_at: number | null
  last_error: string | null
  last_status_code: number | null
  created_at: number
  delivered_at: number | null
}

export interface DeliveryQuery {
  status: DeliveryStatus
  limit: number
  /** Keyset position: deliveries before this sequence number (newest first). */
  before?: number
}

export interface DeliveryPage {
  deliveries: DeliveryRecord[]
  /** Sequence number of the last delivery when more may follow, else null. */
  lastSeq: number | null
}

/** A delivery handed to one deliverer until its lease ends; only the holder of `token` may settle it. */
export interface DeliveryClaim {
  seq: number
  id: string
  endpoint_id: string
  order_id: string | null
  /** The body, exactly as it is sent on every attempt. */
  payload: string
  /** Attempts made before this one. */
  attempts: number
  created_at: number
  token: string
  /** Where to send it; null when its endpoint was deleted meanwhile. */
  target: { url: string, secret: string } | null
  /** The W3C traceparent kept with its order (see Claim), for the attempt's span. */
  traceparent?: string | null
  /** The one attempt let through once its endpoint's circuit cool-down has passed: its outcome closes or reopens the circuit. */
  probe?: boolean
}

/**
 * When an endpoint's circuit opens and for how long: after `failures` failed attempts in a row its
 * due deliveries wait (not claimed, no attempt counted) for `cooldownMs`, then one probe goes; each
 * failed probe doubles the wait up to `maxCooldownMs`, a success closes the circuit.
 */
export interface CircuitPolicy {
  failures: number
  cooldownMs: number
  maxCooldownMs: number
}

/**
 * 30 s: a receiver restarting or failing over is back within it, so a healthy one barely waits;
 * 10 min: a receiver down for hours still gets a probe six times an hour, and its backlog starts
 * flowing within minutes of its return (each delivery's own retry schedule waits up to 2 h).
 */
export const CIRCUIT_COOLDOWN_MS = 30_000
export const CIRCUIT_MAX_COOLDOWN_MS = 600_000
/**
 * WEBHOOK_CIRCUIT_FAILURES' default. Any success resets the count, so a receiver that refuses one
 * bad event but takes the others never opens; 5 in a row, with the endpoint's attempts spread over
 * several deliveries, is a receiver that is down, and costs it at most 5 slot-timeouts before the wait.
 */
export const CIRCUIT_FAILURES = 5
export const DEFAULT_CIRCUIT: CircuitPolicy = { failures: CIRCUIT_FAILURES, cooldownMs: CIRCUIT_COOLDOWN_MS, maxCooldownMs: CIRCUIT_MAX_COOLDOWN_MS }

export const CIRCUIT_STATES = ['closed', 'open', 'half_open'] as const
export type CircuitState = typeof CIRCUIT_STATES[number]

/** Open while its cool-down runs (or its probe's lease), half-open once it has passed: the next due delivery goes as the probe. */
export function circuitState (endpoint: Pick<EndpointRecord, 'circuit_open_until'>, now: number): CircuitState {
  if (endpoint.circuit_open_until === null) return 'closed'
  return endpoint.circuit_open_until > now ? 'open' : 'half_open'
}

/** What each endpoint's settled attempts of one batch do to its circuit, endpoints sorted (rows locked in one order). */
export interface CircuitChange {
  endpoint_id: string
  /** One attempt succeeded: the circuit closes. */
  succeeded: boolean
  /** Its probe failed: the circuit reopens for twice as long. */
  probeFailed: boolean
  /** Its probe succeeded: deliveries that waited are due (other processes are told). */
  probeSucceeded: boolean
  /** Failed attempts (none a probe). */
  failures: number
}

/** The circuit changes of the settled attempts (`probe` when the claim was one), those with no say (discarded) left out. */
export function circuitChanges (settled: Iterable<{ endpoint_id: string, kind: DeliveryOutcome['kind'], probe: boolean }>): CircuitChange[] {
  const changes = new Map<string, CircuitChange>()
  for (const { endpoint_id: id, kind, probe } of settled) {
    if (kind === 'discarded') continue
    let change = changes.get(id)
    if (!change) changes.set(id, change = { endpoint_id: id, succeeded: false, probeFailed: false, probeSucceeded: false, failures: 0 })
    if (kind === 'delivered') {
      change.succeeded = true
      change.probeSucceeded ||= probe
    } else if (probe) change.probeFailed = true
    else change.failures++
  }
  return [...changes.values()].sort((a, b) => (a.endpoint_id < b.endpoint_id ? -1 : a.endpoint_id > b.endpoint_id ? 1 : 0))
}

/** How many attempts each endpoint may have under way: `max`, of which `busy` (by endpoint id) are already. */
export interface EndpointCap {
  max: number
  busy: ReadonlyMap<string, number>
}

/**
 * A claim looks at the earliest `limit` × this many due deliveries, so that the first ones, of
 * capped endpoints, do not hide the others; bounded, because each claim reads them all.
 */
export const CLAIM_WINDOW = 8

/** How many deliveries of each endpoint may be claimed now. */
export function roomOf (cap: EndpointCap | undefined, limit: number): (endpointId: string) => number {
  return (endpointId) => (cap ? Math.min(limit, cap.max - (cap.busy.get(endpointId) ?? 0)) : limit)
}

export type DeliveryOutcome =
  | { claim: DeliveryClaim, kind: 'delivered', statusCode: number }
  /** Tried again `retryInMs` from now, by the store's clock. */
  | { claim: DeliveryClaim, kind: 'retry', retryInMs: number, error: string, statusCode: number | null }
  /** Given up: redeliverable by hand. */
  | { claim: DeliveryClaim, kind: 'failed', error: string, statusCode: number | null }
  /** Its endpoint is gone: dropped. */
  | { claim: DeliveryClaim, kind: 'discarded' }

/** A new event for one endpoint, as recorded in the transaction that made it. */
/** A delivery an erasure deleted, with the end of its lease while an attempt of it was under way (null otherwise). */
export interface ErasedDelivery { endpoint_id: string, order_id: string, status: DeliveryStatus, leased_until: number | null }

/** Of the deliveries an erasure deleted, those an attempt was under way for, till their lease ends. */
export function attemptsUnderWay (erased: readonly ErasedDelivery[]): Array<ErasedDelivery & { leased_until: number }> {
  return erased.filter((delivery): delivery is ErasedDelivery & { leased_until: number } => delivery.leased_until !== null)
}

export interface NewDelivery {
  id: string
  endpoint_id: string
  order_id: string | null
  event_type: string
  payload: string
  created_at: number
}

/**
 * Outbound webhooks, kept by the order store: deliveries of status changes are recorded in the
 * transaction of the change, so that neither exists without the other.
 */
export interface WebhookStore {
  /** Registers an endpoint unless `maxEndpoints` exist already (then null). */
  createEndpoint (endpoint: NewEndpoint, now: number, maxEndpoints: number): Promise<EndpointRecord | null>
  /** Every endpoint, oldest first. */
  endpoints (): Promise<EndpointRecord[]>
  endpoint (id: string): Promise<EndpointRecord | undefined>
  /**
   * Removes an endpoint at once (no event is recorded for it after); its deliveries are removed
   * after, in the background, by purgeDeletedEndpoints. False when there is none.
   */
  deleteEndpoint (id: string, now: number): Promise<boolean>
  /**
   * Removes up to `limit` deliveries of a deleted endpoint, forgetting the endpoint once it has
   * none left; false when there was nothing to do. Each store runs it in the background
   * (BatchSweeper) after a delete and at start, so that a restart finishes a removal cut short.
   */
  purgeDeletedEndpoints (limit: number): Promise<boolean>
  /** Records an event for one endpoint (a test); false when there is no such endpoint. */
  queueDelivery (delivery: NewDelivery, now: number): Promise<boolean>
  /** An endpoint's failed deliveries back to pending, due at once; undefined when there is no such endpoint. */
  redeliver (endpointId: string, now: number): Promise<number | undefined>
  /** An endpoint's deliveries in one state, newest first. */
  deliveries (endpointId: string, query: DeliveryQuery): Promise<DeliveryPage>
  /**
   * Claims up to `limit` due pending deliveries, each for `leaseMs` by the store's clock, only the
   * earliest pending one of each (endpoint, order): a later one found due is put off instead. With
   * `cap`, no endpoint gets more than its room: one whose deliveries are due first cannot take
   * every slot. Only the earliest CLAIM_WINDOW × `limit` due deliveries of endpoints whose circuit
   * is not open are looked at; of an endpoint whose cool-down has passed, one, the probe, which
   * keeps the circuit open until its lease ends.
   */
  claimDeliveries (limit: number, now: number, leaseMs: number, cap?: EndpointCap): Promise<DeliveryClaim[]>
  /**
   * Records the outcomes whose claim is still current, and what they do to their endpoints'
   * circuits (`circuit`, DEFAULT_CIRCUIT when not given); returns how many were.
   */
  settleDeliveries (outcomes: DeliveryOutcome[], now: number, circuit?: CircuitPolicy): Promise<number>
  /** Hands unfinished claims back, due at once; the attempt does not count. */
  releaseDeliveries (claims: DeliveryClaim[], now: number): Promise<number>
  /**
   * Milliseconds until the earliest pending delivery is due (0 or less: due now), by the store's
   * clock, those of an endpoint whose circuit is open at its end; null when none is pending.
   */
  nextDeliveryIn (now: number): Promise<number | null>
  /** Called when deliveries may have become due (new events, redeliveries, hand-backs), maybe from another process. */
  onDeliveries (listener: () => void): () => void
  /** Called once this process has read the endpoints again after some were created or deleted, maybe by another process. */
  onEndpoints (listener: () => void): () => void
}

/** The counts of an endpoint with no delivery yet. */
export function noDeliveries (): Record<DeliveryStatus, number> {
  return { pending: 0, delivered: 0, failed: 0 }
}

/** Each endpoint's delivery counts, from the rows of the stores' endpointCounts statement. */
export function countsByEndpoint (rows: Iterable<{ endpoint_id: string, name: DeliveryStatus, value: number }>): (id: string) => Record<DeliveryStatus, number> {
  const counts = new Map<string, Record<DeliveryStatus, number>>()
  for (const { endpoint_id: id, name, value } of rows) {
    let record = counts.get(id)
    if (!record) counts.set(id, record = noDeliveries())
    record[name] = value
  }
  return (id) => counts.get(id) ?? noDeliveries()
}

/** Deliveries of a deleted endpoint removed per transaction: ~16 ms a batch on SQLite (median of 250, on a loaded machine). */
export const PURGE_BATCH = 1000

/** What removes deleted endpoints' deliveries in the background, a batch at a time: each store runs one. */
export function purgeSweeper (store: Pick<WebhookStore, 'purgeDeletedEndpoints'>, onError: (err: unknown) => void): BatchSweeper {
  return new BatchSweeper(() => store.purgeDeletedEndpoints(PURGE_BATCH), { minPauseMs: 10, retryMs: 5000, onError })
}
