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
   * every slot. Only the earliest CLAIM_WINDOW × `limit` due deliveries are looked at.
   */
  claimDeliveries (limit: number, now: number, leaseMs: number, cap?: EndpointCap): Promise<DeliveryClaim[]>
  /** Records the outcomes whose claim is still current; returns how many were. */
  settleDeliveries (outcomes: DeliveryOutcome[], now: number): Promise<number>
  /** Hands unfinished claims back, due at once; the attempt does not count. */
  releaseDeliveries (claims: DeliveryClaim[], now: number): Promise<number>
  /** Milliseconds until the earliest pending delivery is due (0 or less: due now), by the store's clock; null when none is pending. */
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
const PURGE_BATCH = 1000

/** What removes deleted endpoints' deliveries in the background, a batch at a time: each store runs one. */
export function purgeSweeper (store: Pick<WebhookStore, 'purgeDeletedEndpoints'>, onError: (err: unknown) => void): BatchSweeper {
  return new BatchSweeper(() => store.purgeDeletedEndpoints(PURGE_BATCH), { minPauseMs: 10, retryMs: 5000, onError })
}
