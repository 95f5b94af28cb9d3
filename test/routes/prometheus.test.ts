import t from 'tap'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { build, waitFor } from '../helper.ts'
import { POSTGRES_URL } from '../support/pg-database.ts'
import { WebhookReceiver } from '../support/webhook-receiver.ts'

interface Family { name: string, type: string, metrics: Array<{ labels?: Record<string, string>, value?: string, buckets?: Record<string, string>, count?: string }> }

t.test('GET /metrics is Prometheus text: process, orders by status, stage durations, HTTP stage timings', async (t) => {
  const app = await build(t, { PROCESSING_TIME_MS: '5' })
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 20, batch_id: 'prom' } })
  await waitFor(async () => (await app.store.stats()).counts.Completed === 20, 'completion')
  await app.inject({ url: '/orders/sim_prom_1' })

  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0.0.4/)
  const families = new Map((parsePrometheusTextFormat(res.body) as Family[]).map((f) => [f.name, f]))

  t.ok(families.get('process_cpu_user_seconds_total'), 'process metrics')
  const orders = families.get('orders')!
  t.equal(orders.type, 'GAUGE')
  t.same(Object.fromEntries(orders.metrics.map((m) => [m.labels!.status, Number(m.value)])),
    { Pending: 0, Processing: 0, Completed: 20, Failed: 0, Cancelled: 0 })
  for (const name of ['order_pending_seconds', 'order_processing_seconds', 'order_total_seconds']) {
    const family = families.get(name)!
    t.equal(family.type, 'HISTOGRAM', `${name} is a histogram`)
    t.equal(Number(family.metrics[0]!.count), 20, `${name} observed every order`)
  }
  t.ok(Number(families.get('order_processing_seconds')!.metrics[0]!.buckets!['0.005']) < 20, 'processing took about 5 ms')
  const stages = families.get('http_request_stage_milliseconds')!
  const getStages = stages.metrics.filter((m) => m.labels!.route === 'GET /orders/:order_id' && m.labels!.statistic === 'p99')
  t.same(getStages.map((m) => m.labels!.stage).sort(), ['handler', 'parsing', 'send', 'serialization', 'total', 'validation'])
  const requests = families.get('http_requests')!.metrics.find((m) => m.labels!.route === 'GET /orders/:order_id')
  t.equal(Number(requests!.value), 1, 'the same counts as /orders/metrics')
})

t.test('on PostgreSQL, /metrics reports how full its notification queue is; SQLite has none', async (t) => {
  const app = await build(t)
  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  const usage = (parsePrometheusTextFormat(res.body) as Family[]).find((f) => f.name === 'notification_queue_usage_ratio')
  if (!POSTGRES_URL) {
    t.equal(usage, undefined)
    return
  }
  t.equal(usage?.type, 'GAUGE')
  const value = Number(usage?.metrics[0]?.value)
  t.ok(value >= 0 && value <= 1, `a fraction (${value})`)
})

t.test('GET /metrics counts webhook attempts by outcome and times them', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '1h' })
  await app.inject({ method: 'POST', url: '/webhooks', payload: { url: receiver.url(), events: ['Completed'] } })
  await app.inject({ method: 'POST', url: '/webhooks', payload: { url: receiver.url('/broken'), events: ['Completed'] } })
  receiver.behaviour = async (request, reply) => reply.code(request.url === '/broken' ? 500 : 204).send()
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 3, batch_id: 'hooks' } })
  await waitFor(() => receiver.received.length === 6, 'every attempt')
  const families = await waitFor(async () => {
    const found = new Map((parsePrometheusTextFormat((await app.inject({ url: '/metrics' })).body) as Family[]).map((f) => [f.name, f]))
    return Number(found.get('webhook_attempt_seconds')?.metrics[0]?.count) === 6 && found
  }, 'the attempts observed')
  const attempts = families.get('webhook_delivery_attempts_total')!
  t.equal(attempts.type, 'COUNTER')
  t.same(Object.fromEntries(attempts.metrics.map((m) => [m.labels!.outcome, Number(m.value)])),
    { delivered: 3, http_error: 3, timeout: 0, network_error: 0, refused: 0 })
  t.equal(Number(families.get('webhook_delivery_latency_seconds')!.metrics[0]!.count), 3, 'latency of the delivered ones')
  t.equal(Number(families.get('webhook_deliveries_failed_total')!.metrics[0]!.value), 0, 'none given up yet')
})
