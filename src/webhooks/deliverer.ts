import { Listeners } from '../store/listeners.ts'
import type { OrderStore } from '../store/order-store.ts'
import { CIRCUIT_COOLDOWN_MS, CIRCUIT_MAX_COOLDOWN_MS, type CircuitPolicy, type DeliveryClaim, type DeliveryOutcome } from '../store/webhook-store.ts'
import type { Config } from '../config.ts'
import { parseSchedule, retryDelay } from './retry-schedule.ts'
import { systemResolve } from './destination.ts'
import { signedHeaders } from './signing.ts'
import { WebhookSender, type AttemptKind, type AttemptResult } from './sender.ts'
import { TickBatch } from '../processing/tick-batch.ts'
import { traceWebhook, tracingOn } from '../tracing.ts'

/** Sends one signed body; WebhookSender, or what a test puts in its place. */
export interface Sender {
  send (url: string, headers: Record<string, string>, body: string, signal?: AbortSignal): Promise<AttemptResult>
  /** Closes idle connections to any origin other than these URLs'. */
  keepOnly (urls: readonly string[]): void
  close (): void
}

export interface DelivererOptions {
  /** Attempts under way at once in this process. */
  concurrency: number
  /** Attempts under way at once in this process for one endpoint: one that never answers holds no more slots. */
  endpointConcurrency: number
  /** WEBHOOK_TIMEOUT_MS: an attempt never takes longer, so a lease a little longer is never outlived. */
  timeoutMs: number
  /** The waits after each failed attempt; one more failure than it has steps and the delivery has failed. */
  retrySchedule: readonly number[]
  /** When an endpoint whose attempts keep failing is backed off as a whole; the store's DEFAULT_CIRCUIT when not given. */
  circuit?: CircuitPolicy
  sender: Sender
  now?: () => number
  random?: () => number
  onError?: (err: unknown, context: string) => void
}

/** What one attempt came to, for the metrics. */
export interface AttemptReport {
  kind: AttemptKind
  /** The attempt's duration. */
  seconds: number
  /** Delivered: from the event's recording to now. */
  latencySeconds: number | null
  /** The last attempt failed: the delivery is now `failed`. */
  gaveUp: boolean
}

/** A lease outlasts the longest attempt by this much: time to record its outcome. */
export const DELIVERY_LEASE_MARGIN_MS = 5000
/** After a store failure, the next try. */
const STORE_RETRY_MS = 1000
/** Due deliveries that could not be claimed (another process is claiming them): the next look. */
const BUSY_RETRY_MS = 50
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** The deliverer the configuration describes, posting with node:http/https through the address checks. */
export function configuredDeliverer (store: OrderStore, config: Config, onError: DelivererOptions['onError']): WebhookDeliverer {
  return new WebhookDeliverer(store, {
    concurrency: config.WEBHOOK_CONCURRENCY,
    endpointConcurrency: config.WEBHOOK_ENDPOINT_CONCURRENCY,
    timeoutMs: config.WEBHOOK_TIMEOUT_MS,
    retrySchedule: parseSchedule(config.WEBHOOK_RETRY_SCHEDULE),
    circuit: { failures: config.WEBHOOK_CIRCUIT_FAILURES, cooldownMs: CIRCUIT_COOLDOWN_MS, maxCooldownMs: CIRCUIT_MAX_COOLDOWN_MS },
    sender: new WebhookSender({ timeoutMs: config.WEBHOOK_TIMEOUT_MS, allowPrivate: config.WEBHOOK_ALLOW_PRIVATE, resolve: systemResolve }),
    onError
  })
}

interface Attempt { controller: AbortController, done: Promise<void> }

/**
 * Delivers webhooks from the store, in every process that processes orders. Like the order
 * processor it sleeps until the store announces due deliveries (new events, redeliveries,
 * hand-backs, from any process) or a timer reaches the next due one, then claims up to its free
 * capacity in one store call (each endpoint up to `endpointConcurrency` attempts under way), sends each claim at once (at most `concurrency` at a time), and
 * records the outcomes of one tick in one store call, which frees capacity and looks again.
 *
 * A claim is leased for `timeoutMs` + DELIVERY_LEASE_MARGIN_MS: an attempt is cut at `timeoutMs`,
 * so no other process takes a delivery over while it is being sent; one whose process died is
 * due again when its lease ends, and is sent again with the same webhook-id (at least once).
 * stop() stops claiming, lets attempts under way finish within the grace period, cuts the rest
 * and hands their claims back uncounted.
 */
export class WebhookDeliverer {
  private readonly attempts = new Map<DeliveryClaim, Attempt>()
  private readonly reports = new Listeners<AttemptReport>()
  private readonly records: TickBatch<DeliveryOutcome>
  private timer: NodeJS.Timeout | null = null
  private timerAt = Infinity
  private looking: Promise<void> | null = null
  private lookAgain = false
  private lookSoon = false
  private state: 'new' | 'running' | 'stopping' = 'new'
  private readonly now: () => number
  private readonly unsubscribe: () => void
  private readonly unsubscribeEndpoints: () => void

  constructor (private readonly store: OrderStore, private readonly options: DelivererOptions) {
    this.now = options.now ?? Date.now
    this.records = new TickBatch({
      write: (outcomes) => this.store.settleDeliveries(outcomes, this.now(), this.options.circuit),
      // Unrecorded attempts are left to their leases: sent again later.
      onError: (err) => this.options.onError?.(err, 'recording webhook deliveries'),
      settled: (outcomes) => {
        for (const { claim } of outcomes) this.attempts.delete(claim)
        this.wake()
      }
    })
    this.unsubscribe = store.onDeliveries(() => this.wake())
    this.unsubscribeEndpoints = store.onEndpoints(() => { void this.closeDeletedConnections() })
  }

  /** The connections to a deleted endpoint are closed at once, not when they have been idle long enough. */
  private async closeDeletedConnections (): Promise<void> {
    try {
      const endpoints = await this.store.endpoints()
      this.options.sender.keepOnly(endpoints.map((endpoint) => endpoint.url))
    } catch (err) {
      // Its idle connections still close after a few seconds.
      this.options.onError?.(err, 'reading the webhook endpoints')
    }
  }

  get leaseMs (): number {
    return this.options.timeoutMs + DELIVERY_LEASE_MARGIN_MS
  }

  /** Called after each attempt (for the metrics). */
  onAttempt (listener: (report: AttemptReport) => void): () => void {
    return this.reports.add(listener)
  }

  start (): void {
    if (this.state !== 'new') throw new Error(`deliverer already ${this.state}`)
    this.state = 'running'
    this.wake()
  }

  /** Asks for a look at `at` (now by default), unless one is due sooner. */
  wake (at = this.now()): void {
    if (this.state !== 'running') return
    if (at <= this.now()) {
      if (this.lookSoon) return
      this.lookSoon = true
      setImmediate(() => { this.lookSoon = false; this.look() })
    } else if (at < this.timerAt) {
      if (this.timer) clearTimeout(this.timer)
      this.timerAt = at
      this.timer = setTimeout(() => { this.timer = null; this.timerAt = Infinity; this.look() }, Math.min(at - this.now(), MAX_TIMER_MS))
      this.timer.unref()
    }
  }

  /** One look at a time; a wake-up meanwhile makes it look once more. */
  private look (): void {
    if (this.looking) {
      this.lookAgain = true
      return
    }
    this.looking = (async () => {
      try {
        do {
          this.lookAgain = false
          if (this.state !== 'running') return
          await this.claimAndSend()
        } while (this.lookAgain)
      } catch (err) {
        this.options.onError?.(err, 'claiming webhook deliveries')
        this.wake(this.now() + STORE_RETRY_MS)
      } finally {
        this.looking = null
      }
    })()
  }

  private async claimAndSend (): Promise<void> {
    const free = this.options.concurrency - this.attempts.size
    if (free <= 0) return // a recorded outcome wakes us
    const busy = new Map<string, number>()
    for (const { endpoint_id: id } of this.attempts.keys()) busy.set(id, (busy.get(id) ?? 0) + 1)
    const claims = await this.store.claimDeliveries(free, this.now(), this.leaseMs, { max: this.options.endpointConcurrency, busy })
    for (const claim of claims) {
      const controller = new AbortController()
      const attempt: Attempt = { controller, done: Promise.resolve() }
      this.attempts.set(claim, attempt)
      // Claimed while stopping: handed back by stop() without being sent.
      if (this.state === 'running') attempt.done = this.deliver(claim, controller.signal)
    }
    if (claims.length < free) {
      const delay = await this.store.nextDeliveryIn(this.now())
      // Due ones left unclaimed are being claimed by another process: look again shortly, not at
      // once; or they wait for an endpoint at its cap, whose settled attempts wake us.
      const full = [...busy.values()].some((n) => n >= this.options.endpointConcurrency)
      if (delay !== null) this.wake(this.now() + Math.max(delay, claims.length > 0 ? 1 : full ? STORE_RETRY_MS : BUSY_RETRY_MS))
    }
  }

  private async deliver (claim: DeliveryClaim, signal: AbortSignal): Promise<void> {
    let outcome: DeliveryOutcome
    try {
      outcome = await this.attempt(claim, signal)
    } catch (err) {
      // A fault of this process (a listener that threw), not of the receiver: the claim is left to
      // its lease and sent again then, and its slot is freed.
      this.options.onError?.(err, 'sending a webhook')
      this.attempts.delete(claim)
      this.wake()
      return
    }
    // Cut by stop(): handed back, the attempt uncounted.
    if (signal.aborted || !this.attempts.has(claim)) return
    this.records.add(outcome)
  }

  private async attempt (claim: DeliveryClaim, signal: AbortSignal): Promise<DeliveryOutcome> {
    if (claim.target === null) return { claim, kind: 'discarded' }
    const started = performance.now()
    const headers = signedHeaders(claim.target.secret, claim.id, Math.floor(this.now() / 1000), claim.payload)
    const { url } = claim.target
    const send = (sent: Record<string, string>) => this.options.sender.send(url, sent, claim.payload, signal)
    const result = await (tracingOn ? traceWebhook(claim, url, headers, send) : send(headers))
    const seconds = (performance.now() - started) / 1000
    if (result.kind === 'delivered') {
      this.reports.emit({ kind: result.kind, seconds, latencySeconds: Math.max(0, this.now() - claim.created_at) / 1000, gaveUp: false })
      return { claim, kind: 'delivered', statusCode: result.statusCode as number }
    }
    const error = result.error ?? result.kind
    const retryInMs = retryDelay(this.options.retrySchedule, claim.attempts + 1, this.options.random)
    this.reports.emit({ kind: result.kind, seconds, latencySeconds: null, gaveUp: retryInMs === null })
    return retryInMs === null
      ? { claim, kind: 'failed', error, statusCode: result.statusCode }
      : { claim, kind: 'retry', retryInMs, error, statusCode: result.statusCode }
  }

  /**
   * Stops claiming, lets attempts under way finish within `graceMs` and records them, then cuts
   * the others and hands their claims back, due at once. Rejects, saying how many, when the store
   * would not take them back: they are due again when their leases end.
   */
  async stop (graceMs: number): Promise<void> {
    const wasRunning = this.state === 'running'
    this.state = 'stopping'
    this.unsubscribe()
    this.unsubscribeEndpoints()
    if (this.timer) clearTimeout(this.timer)
    if (wasRunning) {
      await this.looking
      let graceTimer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all([...this.attempts.values()].map((attempt) => attempt.done)),
        new Promise((resolve) => { graceTimer = setTimeout(resolve, graceMs) })
      ])
      clearTimeout(graceTimer)
      for (const { controller } of this.attempts.values()) controller.abort()
      await this.records.drained()
    }
    this.options.sender.close()
    const unfinished = [...this.attempts.keys()]
    this.attempts.clear()
    if (unfinished.length === 0) return
    try {
      await this.store.releaseDeliveries(unfinished, this.now())
    } catch (err) {
      throw new Error(`could not hand back ${unfinished.length} webhook deliveries, they are sent again when their leases end: ${(err as Error).message}`, { cause: err })
    }
  }
}
