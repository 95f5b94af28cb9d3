import t from 'tap'
import { anOrder, build, waitFor } from './helper.ts'

// Every status change is announced with its order id (on PostgreSQL in NOTIFY payloads, which
// have a size limit): ids of the longest allowed length must not stop anything.
t.test('orders with long ids are created and processed: a populate with a 32-character batch id, 400 concurrent creates of 64-character ids', async (t) => {
  const app = await build(t)
  const populated = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 200, batch_id: 'b'.repeat(32) } })
  t.equal(populated.statusCode, 201)
  t.equal(populated.json().success_count, 200)

  const ids = Array.from({ length: 400 }, (_, i) => `order-${i}-`.padEnd(64, 'x'))
  const created = await Promise.all(ids.map((orderId) => app.inject({ method: 'POST', url: '/orders', payload: anOrder(orderId) })))
  t.same(new Set(created.map((res) => res.statusCode)), new Set([201]), 'every create answered 201')

  await waitFor(async () => (await app.store.stats()).counts.Completed === 600, 'every order to be processed')
  t.equal((await app.inject({ url: `/orders/${ids[399]}` })).json().status, 'Completed')
})
