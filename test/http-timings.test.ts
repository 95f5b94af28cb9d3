import t from 'tap'
import { HttpTimings } from '../src/http-timings.ts'

t.test('summaries come from the histogram, in milliseconds, percentiles never above the maximum', async (t) => {
  const timings = new HttpTimings()
  for (let i = 1; i <= 100; i++) timings.record('GET /x', { handler: i, total: 7.578 })
  timings.record('GET /x', { total: 7.578 })
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
  timings.record('GET /y', { total: 1 })
  const first = timings.summary(60_000)['GET /y']!
  timings.record('GET /y', { total: 9 })
  const cached = timings.summary(60_000)['GET /y']!
  t.equal(cached.count, 2)
  t.same(cached.stages, first.stages)
  t.equal(timings.summary(0)['GET /y']!.stages.total.max, 9)
})
