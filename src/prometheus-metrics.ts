import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { HttpTimings } from './http-timings.ts'
import { ORDER_STATUSES, stageDurations } from './order.ts'
import type { OrderStore } from './store/order-store.ts'

/** Buckets for order stage durations, in seconds: from 1 ms to the original's 2 s + 7 s and beyond. */
const STAGE_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 3, 5, 7, 10, 30, 60, 300]

/**
 * The Prometheus view of the service: process metrics, orders by status (the store's running
 * aggregates), whether processing is paused, order stage durations (from the store's status
 * changes), the HTTP lifecycle stage timings, read from the same histograms that feed
 * /orders/metrics, and on PostgreSQL how full its notification queue is.
 */
export function prometheusMetrics (store: OrderStore, httpTimings: HttpTimings): { registry: Registry, stop: () => void } {
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
        observe(pending, stageDurations({ ...change, completed_at: null }).pending)
      } else if (change.status === 'Completed') {
        const durations = stageDurations({ ...change, completed_at: change.at })
        observe(processing, durations.processing)
        observe(total, durations.total)
      }
    }
  }, ['Processing', 'Completed'])

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
  return { registry, stop }
}
