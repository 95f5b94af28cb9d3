import t from 'tap'
import { anOrder, build, waitFor } from '../helper.ts'

t.test('GET /orders/metrics: counts, exact averages and the original fields', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const { store } = app
  await store.create(anOrder('m1'), 1000, 1000)
  await store.create(anOrder('m2'), 1000, 1000)
  await store.create(anOrder('m3'), 1000, 1000)
  await store.create(anOrder('m4'), 1000, 1000)
  await store.cancel('m4', 1500)
  const claims = await store.claim(2, 2000, 60_000)
  await store.settle([{ claim: claims[0]!, ok: true }], 5000)
  const res = await app.inject({ url: '/orders/metrics' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.type(body.http, 'object')
  delete body.http
  // Without getOrderIds no ids are listed; truncated says whether any exist.
  t.same(body, {
    total_orders: 4,
    average_processing_time: 3,
    average_processing_time_from_creation: 4,
    average_pending_time: 1,
    pending: { count: 1, order_ids: [], truncated: true },
    processing: { count: 1, order_ids: [], truncated: true },
    completed: { count: 1, order_ids: [], truncated: true },
    failed: { count: 0, order_ids: [], truncated: false },
    cancelled: { count: 1, order_ids: [], truncated: true },
    processing_state: 'running'
  })

  const ids = (await app.inject({ url: '/orders/metrics/?getOrderIds=true' })).json()
  t.same(ids.completed, { count: 1, order_ids: ['m1'], truncated: false })
  t.same(ids.processing, { count: 1, order_ids: ['m2'], truncated: false })
  t.same(ids.pending, { count: 1, order_ids: ['m3'], truncated: false })
  t.same(ids.cancelled, { count: 1, order_ids: ['m4'], truncated: false })
})

t.test('GET /orders/metrics?getOrderIds=true&limit=N lists oldest first and says when it truncates', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  for (let i = 1; i <= 5; i++) await app.store.create(anOrder(`p${i}`), i, i)
  const res = (await app.inject({ url: '/orders/metrics?getOrderIds=true&limit=2' })).json()
  t.same(res.pending, { count: 5, order_ids: ['p1', 'p2'], truncated: true })
  const all = (await app.inject({ url: '/orders/metrics?getOrderIds=true&limit=5' })).json()
  t.same(all.pending, { count: 5, order_ids: ['p1', 'p2', 'p3', 'p4', 'p5'], truncated: false })
  for (const query of ['limit=0', 'limit=100001', 'getOrderIds=maybe', 'limit=x', 'other=1']) {
    const bad = await app.inject({ url: `/orders/metrics?${query}` })
    t.equal(bad.statusCode, 400, query)
    t.type(bad.json().error, 'string')
  }
})

t.test('averages with no completed orders are 0, with no order at all', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  t.match((await app.inject({ url: '/orders/metrics' })).json(), {
    total_orders: 0, average_processing_time: 0, average_processing_time_from_creation: 0, average_pending_time: 0
  })
})

t.test('http timings per route and lifecycle stage, from the hooks', async (t) => {
  const app = await build(t)
  for (let i = 0; i < 3; i++) await app.inject({ method: 'POST', url: '/orders', payload: anOrder(`h${i}`) })
  await app.inject({ method: 'POST', url: '/orders', payload: { nonsense: true } })
  await app.inject({ url: '/orders/h1' })
  await waitFor(async () => (await app.store.stats()).counts.Completed === 3, 'completion')
  const { http } = (await app.inject({ url: '/orders/metrics' })).json()
  const post = http['POST /orders']
  t.equal(post.count, 4, 'refused requests count too')
  for (const stage of ['parsing', 'validation', 'handler', 'serialization', 'send', 'total']) {
    const s = post.stages[stage]
    t.ok(s.p50 >= 0 && s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max, `${stage} percentiles are ordered`)
  }
  t.ok(post.stages.total.max >= post.stages.handler.max, 'the total covers the handler')
  t.equal(http['GET /orders/:order_id'].count, 1)
})

t.test('getOrderIds=true streams the ids as they are read: every one once, oldest first, truncated where more exist', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const ids = Array.from({ length: 2600 }, (_, i) => `s${String(i).padStart(5, '0')}`)
  await app.store.createMany(ids.map((id) => anOrder(id)), 1000, 1000)
  const cancelled = ids.filter((_, i) => i % 4 === 0)
  // Fifty at a time: 650 at once wait in the PostgreSQL pool's queue, and on a loaded machine
  // (six test files at a time) some waited past DATABASE_TIMEOUT_MS for a connection.
  for (let i = 0; i < cancelled.length; i += 50) await Promise.all(cancelled.slice(i, i + 50).map((id) => app.store.cancel(id, 1001)))
  const pending = ids.filter((_, i) => i % 4 !== 0)
  const plain = (await app.inject({ url: '/orders/metrics' })).json()
  // Around the thousand ids of one read, and all of them exactly.
  for (const limit of [999, 1000, 1001, pending.length, 100_000]) {
    const res = await app.inject({ url: `/orders/metrics?getOrderIds=true&limit=${limit}` })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    const body = res.json()
    t.same(Object.keys(body), Object.keys(plain), 'the same fields, in the same order, as without ids')
    t.same(body.pending, { count: pending.length, order_ids: pending.slice(0, limit), truncated: limit < pending.length }, `pending, limit ${limit}`)
    t.same(body.cancelled, { count: cancelled.length, order_ids: cancelled.slice(0, limit), truncated: limit < cancelled.length }, `cancelled, limit ${limit}`)
    t.same(body.completed, { count: 0, order_ids: [], truncated: false })
    t.equal(body.total_orders, ids.length)
  }
})
