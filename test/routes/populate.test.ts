import t from 'tap'
import { build, waitFor } from '../helper.ts'

t.test('POST /orders/populate creates sim orders that get processed', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 12000, batch_id: 'b1' } })
  t.equal(res.statusCode, 201)
  t.same(res.json(), { batch_id: 'b1', total_entries: 12000, success_count: 12000, failure_count: 0, errors: [] })
  const order = await app.store.get('sim_b1_12000')
  t.ok(order)
  t.equal(order!.user_id, 0)
  t.ok(order!.item_ids.length >= 1 && order!.item_ids.length <= 3)
  t.ok(order!.item_ids.every((id) => id >= 1 && id <= 100))
  t.ok(order!.total_cents >= 1000 && order!.total_cents <= 10000)
  await waitFor(async () => (await app.store.stats()).counts.Completed === 12000, 'all populated orders completed')
})

t.test('a random batch id when none is given; a used one is a 409', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate/', payload: { total_entries: 3 } })
  t.equal(res.statusCode, 201)
  const { batch_id: batchId } = res.json()
  t.match(batchId, /^[0-9a-f]{8}$/)
  const again = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 3, batch_id: batchId } })
  t.equal(again.statusCode, 409)
  t.match(again.json(), { error: /was used before/ })
  t.equal((await app.store.stats()).counts.Pending, 3, 'the refused batch created nothing')
})

t.test('orders that already exist are counted as failures', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: { user_id: 5, order_id: 'sim_x_2', item_ids: [1], total_amount: 1 } })
  const res = (await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 3, batch_id: 'x' } })).json()
  t.same(res, { batch_id: 'x', total_entries: 3, success_count: 2, failure_count: 1, errors: ['Order sim_x_2 already exists'] })
  t.equal((await app.store.get('sim_x_2'))?.user_id, 5, 'the existing order is untouched')
})

t.test('POPULATE_MAX bounds total_entries', async (t) => {
  const app = await build(t, { PROCESSOR: 'off', POPULATE_MAX: '10' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 11 } })
  t.equal(res.statusCode, 400)
  t.same(res.json(), { error: 'body/total_entries must be <= 10' })
})

t.test('POPULATE_ENABLED=false removes the route', async (t) => {
  const app = await build(t, { POPULATE_ENABLED: 'false' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 1 } })
  t.equal(res.statusCode, 404)
  t.type(res.json().error, 'string')
})
