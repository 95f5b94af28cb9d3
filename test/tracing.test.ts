import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { PACKAGE_ROOT } from '../src/package-root.ts'
import t, { type Test } from 'tap'
import { anOrder, build, tempDir, waitFor } from './helper.ts'
import { createDatabase, SKIP_POSTGRES } from './support/pg-database.ts'
import { OtlpCollector, type ReceivedSpan } from './support/otlp-collector.ts'
import { ServerProcess } from './support/server-process.ts'
import { WebhookReceiver } from './support/webhook-receiver.ts'
import { shutdown, startTracing, tracingExporters, tracingOn } from '../src/tracing.ts'

// Real spans, sent by the real OTLP/HTTP exporter to a receiver in this test, from this process and
// from separate server and worker processes. On SQLite, or PostgreSQL when DATABASE_URL names it.
t.setTimeout(300_000)

const SERVER = 2
const CLIENT = 3
const CONSUMER = 5
const ERROR = 2

const collector = await OtlpCollector.start(t)
/** The exporter's settings: JSON, so the receiver decodes with JSON.parse; exports every 50 ms. */
const otel = {
  OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
  OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
  OTEL_BSP_SCHEDULE_DELAY: '50'
}
Object.assign(process.env, otel, { OTEL_SERVICE_NAME: 'orders-test' })
t.ok(await startTracing(), 'tracing on')
t.teardown(shutdown)

const run = promisify(execFile)
const hexId = (bytes: number) => randomBytes(bytes).toString('hex')

/** A webhook receiver subscribed to Completed orders, keeping the traceparent of each request. */
async function subscribedReceiver (t: Test, post: (body: unknown) => Promise<{ status: number, json: any }>): Promise<{ receiver: WebhookReceiver, traceparents: string[] }> {
  const receiver = await WebhookReceiver.start(t)
  const traceparents: string[] = []
  receiver.behaviour = async (request, reply) => {
    traceparents.push(String(request.headers.traceparent))
    return reply.code(204).send()
  }
  const res = await post({ url: receiver.url(), events: ['Completed'] })
  t.equal(res.status, 201)
  receiver.secret = res.json.secret
  return { receiver, traceparents }
}

/** Waits until the trace holds spans that `ready` accepts, and returns them. */
async function traceOf (traceId: string, ready: (spans: ReceivedSpan[]) => boolean, what: string): Promise<ReceivedSpan[]> {
  return waitFor(() => {
    const spans = collector.trace(traceId)
    return ready(spans) && spans
  }, what, 30_000)
}

const named = (spans: ReceivedSpan[], name: string) => spans.filter((span) => span.name === name)

/** The request's server span, the attempt as its child, the webhook attempt as the attempt's sibling: one trace. */
function checkOrderTrace (t: Test, spans: ReceivedSpan[], orderId: string, traceparents: string[]): void {
  const [server] = named(spans, 'POST /orders')
  const [attempt] = named(spans, 'process order')
  const [webhook] = named(spans, 'POST')
  t.ok(server && attempt && webhook, 'the request, the attempt and the webhook attempt in one trace')
  if (!server || !attempt || !webhook) return
  t.match(server, { kind: SERVER, attributes: { 'http.request.method': 'POST', 'http.route': '/orders', 'http.response.status_code': 201 } })
  t.match(attempt, { kind: CONSUMER, attributes: { 'order.id': orderId, attempt: 1, 'order.status': 'Completed' } })
  t.match(webhook, { kind: CLIENT, attributes: { 'http.request.method': 'POST', 'http.response.status_code': 204, 'order.id': orderId, attempt: 1 } })
  t.equal(attempt.parentSpanId, webhook.parentSpanId, 'the attempt and the webhook attempt are children of the same span of the request')
  t.ok(spans.some((span) => span.spanId === attempt.parentSpanId), 'that span is in the trace')
  t.same(traceparents, [`00-${webhook.traceId}-${webhook.spanId}-01`], 'the receiver got the webhook span as its traceparent')
}

t.test('one trace from an incoming traceparent to the webhook attempt', async (t) => {
  const app = await build(t, { WEBHOOK_ALLOW_PRIVATE: 'true' })
  const post = async (body: unknown) => {
    const res = await app.inject({ method: 'POST', url: '/webhooks', payload: body as object })
    return { status: res.statusCode, json: res.json() }
  }
  const { receiver, traceparents } = await subscribedReceiver(t, post)
  const traceId = hexId(16)
  const callerSpan = hexId(8)
  const res = await app.inject({ method: 'POST', url: '/orders', headers: { traceparent: `00-${traceId}-${callerSpan}-01` }, payload: anOrder('TRACED') })
  t.equal(res.statusCode, 201)
  await waitFor(() => receiver.received.length === 1, 'the webhook')
  t.ok(receiver.received[0]?.verified, 'the signature still verifies')
  const spans = await traceOf(traceId, (spans) => named(spans, 'POST').length === 1 && named(spans, 'POST /orders').length === 1, 'the trace')
  t.equal(named(spans, 'POST /orders')[0]?.parentSpanId, callerSpan, 'the server span continues the caller\'s')
  checkOrderTrace(t, spans, 'TRACED', traceparents)
})

t.test('the server span names the caller by its API key\'s name (enduser.id), on a refused request too; never the key', async (t) => {
  const file = join(tempDir(t), 'keys')
  writeFileSync(file, 'viewer read a-long-enough-read-key\n')
  const app = await build(t, { PROCESSOR: 'off', API_KEYS_FILE: file, API_KEY: 'a-long-enough-secret-key' })
  const sent = async (method: 'GET' | 'POST', key: string | undefined, status: number) => {
    const traceId = hexId(16)
    const headers = { traceparent: `00-${traceId}-${hexId(8)}-01`, ...(key && { authorization: `Bearer ${key}` }) }
    const res = await app.inject({ method, url: '/orders', headers, ...(method === 'POST' && { payload: anOrder(`K${traceId}`) }) })
    t.equal(res.statusCode, status, `${method} with ${key ?? 'no key'}`)
    const server = (spans: ReceivedSpan[]) => named(spans, `${method} /orders`).find((span) => span.kind === SERVER)
    return server(await traceOf(traceId, (spans) => server(spans) !== undefined, 'the server span'))!.attributes
  }
  t.equal((await sent('GET', 'a-long-enough-read-key', 200))['enduser.id'], 'viewer')
  t.equal((await sent('POST', 'a-long-enough-secret-key', 201))['enduser.id'], 'API_KEY')
  const refused = await sent('POST', 'a-long-enough-read-key', 403)
  t.equal(refused['enduser.id'], 'viewer', 'a read key refused on a write names its caller too')
  t.notOk(JSON.stringify(refused).includes('a-long-enough'), 'no key in the span')
  t.notOk('enduser.id' in await sent('GET', undefined, 401), 'no key, no caller')
})

t.test('a failing attempt\'s span is an error, and says what the order became', async (t) => {
  const app = await build(t, { FAILURE_RATE: '1', MAX_ATTEMPTS: '2', RETRY_BACKOFF_MS: '0' })
  const traceId = hexId(16)
  t.equal((await app.inject({ method: 'POST', url: '/orders', headers: { traceparent: `00-${traceId}-${hexId(8)}-01` }, payload: anOrder('FAILS') })).statusCode, 201)
  const attempts = named(await traceOf(traceId, (spans) => named(spans, 'process order').length === 2, 'both attempts'), 'process order')
    .sort((a, b) => Number(a.attributes.attempt) - Number(b.attributes.attempt))
  t.match(attempts.map((span) => span.attributes), [{ attempt: 1, 'order.status': 'Pending' }, { attempt: 2, 'order.status': 'Failed' }])
  for (const span of attempts) {
    t.match(span.status, { code: ERROR, message: /simulated/i })
    t.match(span.events, [{ name: 'exception', attributes: { 'exception.message': /simulated/i } }], 'the error recorded')
  }
})

t.test('the processing step runs in its attempt\'s span: what it calls joins the trace', async (t) => {
  // A step that does what an instrumented client does: sends the active context on.
  const step = join(tempDir(t), 'step.mjs')
  writeFileSync(step, `
    import { context, propagation } from ${JSON.stringify(import.meta.resolve('@opentelemetry/api'))}
    export default async function () {
      await new Promise((resolve) => setImmediate(resolve))
      const headers = {}
      propagation.inject(context.active(), headers)
      return headers
    }
  `)
  const app = await build(t, { PROCESSOR_MODULE: step })
  const traceId = hexId(16)
  t.equal((await app.inject({ method: 'POST', url: '/orders', headers: { traceparent: `00-${traceId}-${hexId(8)}-01` }, payload: anOrder('STEP') })).statusCode, 201)
  const [attempt] = named(await traceOf(traceId, (spans) => named(spans, 'process order').length === 1, 'the attempt'), 'process order')
  // The span ends before the completion is written.
  const order = await waitFor(async () => {
    const read = (await app.inject({ url: '/orders/STEP' })).json()
    return read.status === 'Completed' && read
  }, 'the order completed')
  t.same(order.result, { traceparent: `00-${traceId}-${attempt?.spanId}-01` }, 'the step saw the attempt\'s span as the active one')
})

t.test('a batch: each order\'s attempt joins the request\'s trace, started here when the caller sent none', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/orders/batch', payload: { orders: [anOrder('B1'), anOrder('B2')] } })
  t.equal(res.statusCode, 200)
  const server = await waitFor(() => collector.spans.find((span) => span.name === 'POST /orders/batch'), 'the request span')
  t.equal(server.parentSpanId, '', 'a new trace')
  const attempts = named(await traceOf(server.traceId, (spans) => named(spans, 'process order').length === 2, 'both attempts'), 'process order')
  t.same(attempts.map((span) => span.attributes['order.id']).sort(), ['B1', 'B2'])
})

t.test('across processes on PostgreSQL: the request in the server, the attempt and the webhook in a worker', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const env = { DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', WEBHOOK_ALLOW_PRIVATE: 'true', ...otel }
  const server = await ServerProcess.start({ ...env, PROCESSOR: 'off', OTEL_SERVICE_NAME: 'orders-api' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const { receiver, traceparents } = await subscribedReceiver(t, (body) => server.request('/webhooks', body))
  const worker = await ServerProcess.startWorker({ ...env, OTEL_SERVICE_NAME: 'orders-worker' })
  t.teardown(() => { worker.child.kill('SIGKILL') })
  const traceId = hexId(16)
  const res = await fetch(`${server.url}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${hexId(8)}-01` },
    body: JSON.stringify(anOrder('ACROSS'))
  })
  t.equal(res.status, 201)
  await waitFor(() => receiver.received.length === 1, 'the webhook', 30_000)
  const spans = await traceOf(traceId, (spans) => named(spans, 'POST').length === 1 && named(spans, 'process order').length === 1, 'the trace')
  t.equal(named(spans, 'POST /orders')[0]?.service, 'orders-api', 'the request in the server process')
  t.equal(named(spans, 'process order')[0]?.service, 'orders-worker', 'the attempt in the worker process')
  checkOrderTrace(t, spans, 'ACROSS', traceparents)
  t.equal(await worker.stop('SIGTERM'), 0, 'the worker flushes its spans and exits 0')
})

/**
 * Runs the service in a process of its own (an order created and processed), and answers which
 * modules of the OpenTelemetry SDK and @fastify/otel it loaded.
 */
async function sdkModulesLoaded (env: Record<string, string>): Promise<string[]> {
  const script = `
    import { createRequire } from 'node:module'
    import { buildApp } from './src/app.ts'
    import { loadConfig } from './src/config.ts'
    import { startTracing, shutdown } from './src/tracing.ts'
    await startTracing()
    const app = await buildApp(loadConfig({ DATABASE_URL: 'sqlite::memory:', PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', MAX_EVENT_LOOP_DELAY_MS: '0' }), { logger: false })
    await app.inject({ method: 'POST', url: '/orders', payload: ${JSON.stringify(anOrder('OFF'))} })
    while ((await app.inject({ url: '/orders/OFF' })).json().status !== 'Completed') await new Promise((resolve) => setTimeout(resolve, 10))
    await app.close()
    await shutdown()
    const loaded = Object.keys(createRequire(import.meta.url).cache)
    console.log(JSON.stringify(loaded.filter((path) => /@opentelemetry\\/(sdk-|exporter-|resources|instrumentation)|@fastify\\/otel/.test(path))))
  `
  const { OTEL_EXPORTER_OTLP_ENDPOINT: _, OTEL_EXPORTER_OTLP_PROTOCOL: __, OTEL_SERVICE_NAME: ___, ...inherited } = process.env
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], { cwd: PACKAGE_ROOT, env: { ...inherited, ...env } })
  return JSON.parse(stdout.trim().split('\n').at(-1) as string)
}

t.test('off, nothing of the SDK is loaded; on, it is', async (t) => {
  t.same(await sdkModulesLoaded({}), [], 'off: none of it')
  t.ok((await sdkModulesLoaded(otel)).length > 0, 'on: the SDK and @fastify/otel (so the check above can fail)')
})

t.test('off unless configured', async (t) => {
  t.same(tracingExporters({}), [], 'nothing set: off')
  t.same(tracingExporters({ OTEL_SERVICE_NAME: 'x', OTEL_TRACES_SAMPLER: 'always_on' }), [], 'a name or a sampler alone: off')
  t.same(tracingExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }), ['otlp'], 'an endpoint: OTLP')
  t.same(tracingExporters({ OTEL_TRACES_EXPORTER: 'console' }), ['console'])
  t.same(tracingExporters({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }), [], 'none wins')
  t.same(tracingExporters({ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }), [], 'OTEL_SDK_DISABLED wins')
  t.throws(() => tracingExporters({ OTEL_TRACES_EXPORTER: 'zipkin' }), /OTEL_TRACES_EXPORTER must list otlp, console, none, got "zipkin"/)
  t.throws(() => tracingExporters({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), /^OTEL_EXPORTER_OTLP_PROTOCOL must be http\/protobuf or http\/json \(grpc is not supported\), got "grpc"$/)
  t.throws(() => tracingExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' }), /^OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be/)
  t.ok(tracingOn)
})
