import t, { type Test } from 'tap'
import { buildApp } from '../src/app.ts'
import { HttpTimings } from '../src/http/http-timings.ts'
import { anOrder, testConfig, waitFor, type Settings } from './helper.ts'

t.test('summaries come from the histogram, in milliseconds, percentiles never above the maximum', async (t) => {
  const timings = new HttpTimings()
  const route = timings.route('GET /x')
  for (let i = 1; i <= 100; i++) route.record(NaN, NaN, i, NaN, NaN, 7.578)
  route.record(NaN, NaN, NaN, NaN, NaN, 7.578)
  const { count, stages } = timings.summary()['GET /x']!
  t.equal(count, 101)
  t.equal(stages.handler.max, 100)
  // Two significant digits: each figure is within 1% of the exact one.
  const near = (actual: number, exact: number, what: string) => t.ok(Math.abs(actual - exact) <= exact / 100, `${what}: ${actual} ~ ${exact}`)
  near(stages.handler.p50, 50, 'p50')
  near(stages.handler.p95, 95, 'p95')
  near(stages.handler.p99, 99, 'p99')
  t.equal(stages.handler.mean, 50.5, 'the mean is exact')
  t.equal(stages.total.max, 7.578)
  t.equal(stages.total.p99, 7.578, 'the bucket top (7.579) is clamped to the exact maximum')
  t.same(stages.parsing, { mean: 0, p50: 0, p95: 0, p99: 0, max: 0 }, 'a stage never reached reports zeros')
})

t.test('stage figures may be reused for a while; counts never are', async (t) => {
  const timings = new HttpTimings()
  const route = timings.route('GET /y')
  route.record(NaN, NaN, NaN, NaN, NaN, 1)
  const first = timings.summary(60_000)['GET /y']!
  route.record(NaN, NaN, NaN, NaN, NaN, 9)
  const cached = timings.summary(60_000)['GET /y']!
  t.equal(cached.count, 2)
  t.same(cached.stages, first.stages)
  t.equal(timings.summary(0)['GET /y']!.stages.total.max, 9)
})

t.test('a route that has answered nothing is not listed', async (t) => {
  const timings = new HttpTimings()
  timings.route('GET /never')
  t.same(timings.summary(), {})
})

/** The app on SQLite in memory, logging to an array of parsed lines. */
async function loggingApp (t: Test, settings: Settings) {
  const lines: Array<Record<string, unknown>> = []
  const app = await buildApp(testConfig({ PROCESSOR: 'off', ...settings }), {
    logger: { level: 'info', stream: { write: (line) => { lines.push(JSON.parse(line)) } } }
  })
  t.teardown(() => app.close())
  await app.ready()
  return { app, lines }
}

t.test('requests are not logged by default; with ACCESS_LOG=true each is, in one line naming its route', async (t) => {
  const quiet = await loggingApp(t, {})
  await quiet.app.inject({ url: '/orders/nope' })
  await quiet.app.inject({ method: 'POST', url: '/orders', payload: anOrder('L1') })
  t.same(quiet.lines.filter((l) => /request/.test(String(l.msg))), [], 'no line per request')
  t.ok(quiet.app.httpTimings.summary()['POST /orders'], 'still timed')

  const logging = await loggingApp(t, { ACCESS_LOG: 'true' })
  await logging.app.inject({ method: 'POST', url: '/orders', payload: anOrder('L1') })
  await logging.app.inject({ url: '/orders/L1' })
  await logging.app.inject({ url: '/nowhere' })
  const requests = logging.lines.filter((l) => l.msg === 'request completed')
  t.match(requests, [
    { level: 30, route: 'POST /orders', url: '/orders', statusCode: 201, reqId: String, responseTimeMs: Number },
    { route: 'GET /orders/:order_id', url: '/orders/L1', statusCode: 200 },
    { route: '(not found)', url: '/nowhere', statusCode: 404 }
  ])
  t.equal(requests.length, 3, 'one line each')
})

t.test('a request slower than SLOW_REQUEST_MS is logged at warn even without ACCESS_LOG', async (t) => {
  const { app, lines } = await loggingApp(t, { SLOW_REQUEST_MS: '1' })
  // A populate of 20,000 orders takes longer than 1 ms.
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 20_000 } })
  await app.inject({ url: '/health' })
  t.match(lines.filter((l) => l.msg === 'slow request'), [{ level: 40, route: 'POST /orders/populate', statusCode: 201 }])
})

t.test('a request refused by the API key check is timed from its start, like any other', async (t) => {
  const app = await buildApp(testConfig({ PROCESSOR: 'off', API_KEY: 'a-long-enough-secret-key' }), { logger: false })
  t.teardown(() => app.close())
  await app.ready()
  // Long enough after the process began that a request timed from 0 would show it.
  await waitFor(() => performance.now() > 1500, 'the process to have run for 1.5 s')
  t.equal((await app.inject({ url: '/orders' })).statusCode, 401)
  const { count, stages } = app.httpTimings.summary(0)['GET /orders']!
  t.equal(count, 1)
  t.ok(stages.total.max < 1000, `timed from its start: ${stages.total.max} ms, not the process's ${Math.round(performance.now())} ms`)
})
