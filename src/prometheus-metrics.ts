import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { HttpTimings } from './http/http-timings.ts'
import { ORDER_STATUSES, stageDurations } from './order.ts'
import type { OrderStore } from './store/order-store.ts'
import type { Sweeper } from './sweeper.ts'
import { circuitState } from './store/webhook-store.ts'
import type { WebhookDeliverer } from './webhooks/deliverer.ts'
import { ATTEMPT_KINDS } from './webhooks/sender.ts'

/** Buckets for order stage durations, in seconds: from 1 ms to the original's 2 s + 7 s and beyond. */
const STAGE_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 3, 5, 7, 10, 30, 60, 300]
/** The store's size is read at most this often: on PostgreSQL it sums the sizes of every table's files. */
const DISK_BYTES_MAX_AGE_MS = 5000

/** Webhook attempts: up to WEBHOOK_TIMEOUT_MS's default and beyond. */
const ATTEMPT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** From an event to its delivery: at once, or after retries from 5 s to a day. */
const DELIVERY_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 7200, 86_400]

/**
 * The Prometheus view of the service: process metrics, orders by status (the store's running
 * aggregates), whether processing is paused, order stage durations (from the store's status
 * changes), the HTTP lifecycle stage timings, read from the same histograms that feed
 * /orders/metrics, and on PostgreSQL how full its notification queue is.
 */
export function prometheusMetrics (store: OrderStore, httpTimings: HttpTimings, deliverer: WebhookDeliverer | null, sweeper: Sweeper): { registry: Registry, stop: () => void } {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })

  registry.registerMetric(new Gauge({
    name: 'orders',
    help: 'Orders by status',
    labelNames: ['status'],
    registers: [],
    async collect () {
      const { counts } = await store.stats()
      for (const status of ORDER_STATUSES) this.set({ status }, counts[status])
    }
  }))

  registry.registerMetric(new Gauge({
    name: 'processing_paused',
    help: 'Whether order processing is paused (POST /processing/pause): 1, or 0 while running',
    registers: [],
    async collect () { this.set((await store.processingState()).state === 'paused' ? 1 : 0) }
  }))

  const queueUsage = store.notificationQueueUsage?.bind(store)
  if (queueUsage) {
    registry.registerMetric(new Gauge({
      name: 'notification_queue_usage_ratio',
      help: "Fraction of PostgreSQL's notification queue in use: when full, every write fails; past 0.5 a listening session is not reading",
      registers: [],
      async collect () { this.set(await queueUsage()) }
    }))
  }

  const stage = (name: string, help: string) =>
    new Histogram({ name, help, buckets: STAGE_BUCKETS, registers: [registry] })
  const pending = stage('order_pending_seconds', 'Time from creation to the start of processing')
  const processing = stage('order_processing_seconds', 'Time from the start of processing to completion')
  const total = stage('order_total_seconds', 'Time from creation to completion')
  const observe = (histogram: Histogram, ms: number | null) => { if (ms !== null) histogram.observe(ms / 1000) }
  const stop = store.onChanges((changes) => {
    for (const change of changes) {
      // An order's wait is observed once, when it first starts; its other stages when it completes.
      if (change.status === 'Processing' && change.attempts === 1) {
        observe(pending, stageDurations(change, null).pending)
      } else if (change.status === 'Completed') {
        const durations = stageDurations(change, change.at)
        observe(processing, durations.processing)
        observe(total, durations.total)
      }
    }
  }, ['Processing', 'Completed'])
  const stopWebhooks = deliverer ? webhookMetrics(registry, deliverer) : () => {}
  registry.registerMetric(new Gauge({
    name: 'webhook_endpoints_circuit_open',
    help: "Webhook endpoints whose circuit is not closed: their attempts kept failing, so their deliveries wait (open) or one probe is due (half-open); read from the store, every process's view",
    registers: [],
    async collect () {
      const now = Date.now()
      this.set((await store.endpoints()).filter((endpoint) => circuitState(endpoint, now) !== 'closed').length)
    }
  }))
  const stopDeletions = deletionMetrics(registry, store, sweeper)

  registry.registerMetric(new Gauge({
    name: 'http_requests',
    help: 'Requests answered, per route',
    labelNames: ['route'],
    registers: [],
    collect () {
      for (const [route, timings] of Object.entries(httpTimings.summary())) this.set({ route }, timings.count)
    }
  }))
  registry.registerMetric(new Gauge({
    name: 'http_request_stage_milliseconds',
    help: 'Request lifecycle stage timings per route (the figures of /orders/metrics)',
    labelNames: ['route', 'stage', 'statistic'],
    registers: [],
    collect () {
      for (const [route, timings] of Object.entries(httpTimings.summary())) {
        for (const [stageName, summary] of Object.entries(timings.stages)) {
          for (const [statistic, value] of Object.entries(summary)) this.set({ route, stage: stageName, statistic }, value)
        }
      }
    }
  }))
  return { registry, stop: () => { stop(); stopWebhooks(); stopDeletions() } }
}

/**
 * What this process's sweeper deleted, and the store's size on disk. The `orders` gauge goes down
 * as orders are deleted (it is a count of what is stored); these counters only go up.
 */
function deletionMetrics (registry: Registry, store: OrderStore, sweeper: Sweeper): () => void {
  const orders = new Counter({ name: 'orders_deleted_total', help: 'Orders deleted by this process: retention (their retention passed) or erasure (DELETE /orders...)', labelNames: ['reason'], registers: [registry] })
  orders.inc({ reason: 'retention' }, 0)
  orders.inc({ reason: 'erasure' }, 0)
  const deliveries = new Counter({ name: 'webhook_deliveries_deleted_total', help: 'Delivered and failed webhook deliveries deleted by this process once past WEBHOOK_DELIVERY_RETENTION', registers: [registry] })
  let size = { bytes: 0, at: -Infinity }
  registry.registerMetric(new Gauge({
    name: 'store_disk_bytes',
    help: "Bytes the store takes on disk (SQLite: its files, WAL included; PostgreSQL: its tables' total relation size), read at most every 5 s",
    registers: [],
    async collect () {
      if (Date.now() - size.at >= DISK_BYTES_MAX_AGE_MS) size = { bytes: await store.diskBytes(), at: Date.now() }
      this.set(size.bytes)
    }
  }))
  return sweeper.onDeleted((what) => {
    if ('orders' in what) orders.inc({ reason: what.reason }, what.orders)
    else deliveries.inc(what.deliveries)
  })
}

/** Attempts of this process's deliverer by outcome, deliveries given up, attempt durations and delivery latency. */
function webhookMetrics (registry: Registry, deliverer: WebhookDeliverer): () => void {
  const attempts = new Counter({
    name: 'webhook_delivery_attempts_total',
    help: 'Webhook attempts by outcome: delivered (2xx), http_error (another status, redirects included), timeout, network_error, refused (a destination the rules forbid)',
    labelNames: ['outcome'],
    registers: [registry]
  })
  for (const outcome of ATTEMPT_KINDS) attempts.inc({ outcome }, 0)
  const failed = new Counter({ name: 'webhook_deliveries_failed_total', help: 'Deliveries given up after their last attempt (redeliverable)', registers: [registry] })
  const duration = new Histogram({ name: 'webhook_attempt_seconds', help: 'Duration of each webhook attempt', buckets: ATTEMPT_BUCKETS, registers: [registry] })
  const latency = new Histogram({
    name: 'webhook_delivery_latency_seconds',
    help: 'From the recording of an event to its delivery, retries included',
    buckets: DELIVERY_BUCKETS,
    registers: [registry]
  })
  return deliverer.onAttempt((report) => {
    attempts.inc({ outcome: report.kind })
    duration.observe(report.seconds)
    if (report.latencySeconds !== null) latency.observe(report.latencySeconds)
    if (report.gaveUp) failed.inc()
  })
}
