import t from 'tap'
import { build } from '../helper.ts'

t.test('GET /health and GET /ready', async (t) => {
  const app = await build(t)
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200)
  t.same(health.json(), { status: 'ok' })
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready' })
})

t.test('GET /ready is 503 when the store cannot be reached', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.store.close()
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { error: 'Store unavailable: it does not take writes now' })
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200, 'the process itself is still alive')
  const create = await app.inject({ method: 'POST', url: '/orders', payload: { user_id: 1, order_id: 'x', item_ids: [1], total_amount: 1 } })
  t.equal(create.statusCode, 500)
  t.same(create.json(), { error: 'Internal server error' }, 'no internals leak')
})
