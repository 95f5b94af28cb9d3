import t from 'tap'
import { bearerChecker } from '../src/api-key.ts'
import { anOrder, build } from './helper.ts'

const KEY = 'a-long-enough-secret-key'

t.test('with API_KEY set, every route but /health, /ready, /docs and the dashboard page needs the key', async (t) => {
  const app = await build(t, { API_KEY: KEY, PROCESSOR: 'off' })
  for (const url of ['/health', '/ready', '/docs/json', '/docs', '/dashboard', '/dashboard/app.js', '/dashboard/chart.js']) {
    t.ok((await app.inject({ url })).statusCode < 400, `${url} is open`)
  }
  const requests = [
    { method: 'POST' as const, url: '/orders', payload: anOrder('K1') },
    { method: 'GET' as const, url: '/orders' },
    { method: 'GET' as const, url: '/orders/K1' },
    { method: 'GET' as const, url: '/orders/metrics' },
    { method: 'GET' as const, url: '/orders/stream' },
    { method: 'GET' as const, url: '/metrics' },
    { method: 'GET' as const, url: '/dashboards' },
    { method: 'POST' as const, url: '/orders/populate', payload: { total_entries: 1 } },
    { method: 'POST' as const, url: '/orders/K1/cancel' },
    { method: 'POST' as const, url: '/orders/K1/retry' },
    { method: 'POST' as const, url: '/orders/retry-failed', payload: {} },
    { method: 'POST' as const, url: '/orders/batch', payload: { orders: [anOrder('K2')] } },
    { method: 'GET' as const, url: '/processing' },
    { method: 'POST' as const, url: '/processing/pause' },
    { method: 'POST' as const, url: '/processing/resume' },
    { method: 'GET' as const, url: '/healthz' }
  ]
  for (const request of requests) {
    for (const authorization of [undefined, 'Bearer wrong', `Basic ${KEY}`, 'Bearer ', KEY]) {
      const res = await app.inject({ ...request, headers: authorization === undefined ? {} : { authorization } })
      t.equal(res.statusCode, 401, `${request.method} ${request.url} with ${authorization}`)
      t.match(res.json(), { error: /API key/ })
    }
  }
  t.equal((await app.store.stats()).counts.Pending, 0, 'nothing was created')
  t.equal((await app.store.processingState()).state, 'running', 'nor paused')
  const ok = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('K1'), headers: { authorization: `Bearer ${KEY}` } })
  t.equal(ok.statusCode, 201)
})

t.test('without API_KEY nothing needs a key', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  t.equal((await app.inject({ url: '/orders' })).statusCode, 200)
})

t.test('bearerChecker', async (t) => {
  const matches = bearerChecker(KEY)
  t.equal(matches(`Bearer ${KEY}`), true)
  t.equal(matches(`Bearer ${KEY}x`), false)
  t.equal(matches(undefined), false)
})
