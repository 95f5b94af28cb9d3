import t from 'tap'
import { anOrder, build, waitFor } from '../helper.ts'

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

t.test('POST /orders creates, replays safely and refuses a different body', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const created = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('ORD003') })
  t.equal(created.statusCode, 201)
  t.equal(created.headers.location, '/orders/ORD003')
  t.same(created.json(), { message: 'Order created', order_id: 'ORD003' })

  const replay = await app.inject({ method: 'POST', url: '/orders/', payload: anOrder('ORD003') })
  t.equal(replay.statusCode, 200, 'a trailing slash is accepted')
  t.same(replay.json(), { message: 'Order already exists', order_id: 'ORD003' })

  const conflict = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('ORD003', { total_amount: 1 }) })
  t.equal(conflict.statusCode, 409)
  t.match(conflict.json(), { error: /ORD003 already exists with different content/ })
  t.equal((await app.store.get('ORD003'))?.total_cents, 5999, 'the conflict changed nothing')
})

t.test('GET /orders/:order_id reports every field, null until reached', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('A1', { total_amount: 0.1 }) })
  const res = await app.inject({ url: '/orders/A1' })
  t.equal(res.statusCode, 200)
  const order = res.json()
  t.same(Object.keys(order).sort(), [
    'attempts', 'completed_at', 'created_at', 'item_ids', 'last_error', 'order_id', 'pending_duration',
    'processing_duration', 'processing_started_at', 'result', 'status', 'total_amount', 'total_duration', 'updated_at', 'user_id'
  ])
  t.match(order, {
    order_id: 'A1',
    user_id: 1,
    item_ids: [101, 102, 103],
    total_amount: 0.1,
    status: 'Pending',
    processing_started_at: null,
    completed_at: null,
    pending_duration: null,
    processing_duration: null,
    total_duration: null,
    attempts: 0,
    last_error: null,
    result: null
  })
  t.match(order.created_at, ISO_MS)
  t.equal(res.body.includes('"total_amount":0.1,'), true, 'the amount is the same JSON number that was sent')

  const missing = await app.inject({ url: '/orders/nope' })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { error: 'Order not found' })
})

t.test('an order moves Pending -> Processing -> Completed with its timings', async (t) => {
  const app = await build(t, { PENDING_DELAY_MS: '100', PROCESSING_TIME_MS: '50' })
  const statuses: string[] = []
  t.teardown(app.store.onChanges((changes) => { for (const change of changes) statuses.push(change.status) }))
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('T1') })
  const done = await waitFor(async () => {
    const order = (await app.inject({ url: '/orders/T1' })).json()
    return order.status === 'Completed' && order
  }, 'the order to complete')
  t.same(statuses, ['Pending', 'Processing', 'Completed'])
  t.ok(done.pending_duration >= 0.1, `waited the pending delay (${done.pending_duration}s)`)
  t.ok(done.processing_duration >= 0.05, `took the processing time (${done.processing_duration}s)`)
  t.equal(done.total_duration, Math.round((done.pending_duration + done.processing_duration) * 1000) / 1000)
  for (const field of ['created_at', 'processing_started_at', 'completed_at', 'updated_at']) t.match(done[field], ISO_MS)
})

t.test('GET /orders lists oldest first with keyset pagination and filters', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  for (let i = 1; i <= 5; i++) {
    await app.inject({ method: 'POST', url: '/orders', payload: anOrder(`L${i}`, { user_id: i % 2 }) })
  }
  const page1 = (await app.inject({ url: '/orders?limit=2' })).json()
  t.same(page1.orders.map((o: { order_id: string }) => o.order_id), ['L1', 'L2'])
  t.type(page1.next_cursor, 'string')
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('L6', { user_id: 0 }) })
  const page2 = (await app.inject({ url: `/orders?limit=2&cursor=${page1.next_cursor}` })).json()
  t.same(page2.orders.map((o: { order_id: string }) => o.order_id), ['L3', 'L4'])
  const page3 = (await app.inject({ url: `/orders/?limit=2&cursor=${page2.next_cursor}` })).json()
  t.same(page3.orders.map((o: { order_id: string }) => o.order_id), ['L5', 'L6'])
  t.equal(page3.next_cursor, null)

  await app.inject({ method: 'POST', url: '/orders/L2/cancel' })
  const filtered = (await app.inject({ url: '/orders?status=Pending&user_id=0' })).json()
  t.same(filtered.orders.map((o: { order_id: string }) => o.order_id), ['L4', 'L6'])
  t.same((await app.inject({ url: '/orders?status=Cancelled' })).json().orders.map((o: { order_id: string }) => o.order_id), ['L2'])

  const forged = Buffer.from(page1.next_cursor, 'base64url')
  forged[7] = 1
  const made = [
    'garbage', Buffer.from('seq:1').toString('base64url'), forged.toString('base64url'), `${page1.next_cursor}=`,
    page1.next_cursor.slice(0, -1)
  ]
  for (const cursor of made) {
    const bad = await app.inject({ url: `/orders?cursor=${cursor}` })
    t.equal(bad.statusCode, 400, `cursor ${cursor}`)
    t.match(bad.json(), { error: /cursor/ })
  }
})

t.test('POST /orders/:order_id/cancel cancels Pending orders only', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('C1') })
  const cancelled = await app.inject({ method: 'POST', url: '/orders/C1/cancel' })
  t.equal(cancelled.statusCode, 200)
  t.match(cancelled.json(), { order_id: 'C1', status: 'Cancelled' })
  const again = await app.inject({ method: 'POST', url: '/orders/C1/cancel/' })
  t.equal(again.statusCode, 409)
  t.same(again.json(), { error: 'Order is Cancelled: only a Pending order can be cancelled' })
  const missing = await app.inject({ method: 'POST', url: '/orders/none/cancel' })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { error: 'Order not found' })
})

t.test('a Completed order cannot be cancelled', async (t) => {
  const app = await build(t)
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('C2') })
  await waitFor(async () => (await app.store.get('C2'))?.status === 'Completed', 'completion')
  const res = await app.inject({ method: 'POST', url: '/orders/C2/cancel' })
  t.equal(res.statusCode, 409)
  t.same(res.json(), { error: 'Order is Completed: only a Pending order can be cancelled' })
})
