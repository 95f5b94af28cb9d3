import t from 'tap'
import { RETRY_CHUNK } from '../../src/retry-failed.ts'
import type { OrderStore } from '../../src/store/order-store.ts'
import { anOrder, build, waitFor } from '../helper.ts'
import { recount } from '../support/store-contract.ts'

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

t.test('GET answers an order as it is now, read again and again and after it changes', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('G1') })
  const first = await app.inject({ url: '/orders/G1' })
  const again = await app.inject({ url: '/orders/G1' })
  t.equal(again.body, first.body, 'the same answer while nothing changed')
  t.match(again.headers['content-type'], /^application\/json/)
  t.same(again.json(), first.json())
  await app.inject({ method: 'POST', url: '/orders/G1/cancel' })
  const cancelled = await app.inject({ url: '/orders/G1' })
  t.match(cancelled.json(), { order_id: 'G1', status: 'Cancelled' }, 'the change, not the answer read before it')
})

t.test('GET /orders?order=desc lists newest first; a cursor pages on only in the order it was issued for', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  for (let i = 1; i <= 5; i++) await app.inject({ method: 'POST', url: '/orders', payload: anOrder(`D${i}`, { user_id: i % 2 }) })
  const ids = (body: { orders: Array<{ order_id: string }> }) => body.orders.map((o) => o.order_id)
  const first = await app.inject({ url: '/orders?order=desc&limit=2' })
  t.same(ids(first.json()), ['D5', 'D4'])
  t.equal(first.headers.link, `</orders?order=desc&limit=2&cursor=${first.json().next_cursor}>; rel="next"`, 'the Link keeps the order')
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('D6', { user_id: 0 }) })
  const second = (await app.inject({ url: `/orders?order=desc&limit=2&cursor=${first.json().next_cursor}` })).json()
  t.same(ids(second), ['D3', 'D2'], 'on to older orders; the one added meanwhile is not in between')
  const third = (await app.inject({ url: `/orders?limit=2&order=desc&cursor=${second.next_cursor}` })).json()
  t.same(third, { orders: [third.orders[0]], next_cursor: null })
  t.same(ids(third), ['D1'])
  t.same(ids((await app.inject({ url: '/orders?order=desc&user_id=1&status=Pending' })).json()), ['D5', 'D3', 'D1'])
  t.same(ids((await app.inject({ url: '/orders?order=asc&limit=2' })).json()), ['D1', 'D2'], 'order=asc is the default order')

  const oldestFirst = (await app.inject({ url: '/orders?limit=2' })).json().next_cursor
  const crossed: Array<[string, string]> = [[`/orders?order=desc&cursor=${oldestFirst}`, 'asc'], [`/orders?cursor=${first.json().next_cursor}`, 'desc']]
  for (const [url, issuedFor] of crossed) {
    const refused = await app.inject({ url })
    t.equal(refused.statusCode, 400, url)
    t.same(refused.json(), { error: `querystring/cursor was issued for order=${issuedFor}: send it with order=${issuedFor}, or start again without a cursor` })
  }
  const bad = await app.inject({ url: '/orders?order=newest' })
  t.equal(bad.statusCode, 400)
  t.same(bad.json(), { error: 'querystring/order must be one of: asc, desc' })
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

/** Fails orders through the store, as a processor whose attempts all failed would. */
async function failOrders (store: OrderStore, count: number, now: number): Promise<void> {
  const claims = await store.claim(count, now, 60_000)
  await store.settle(claims.map((claim) => ({ claim, ok: false as const, error: 'card declined', retryAt: null })), now + 1)
}

t.test('POST /orders/:order_id/retry sends a Failed order back to Pending for a fresh run; other statuses are a 409', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('R1') })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('R2') })
  await failOrders(app.store, 1, Date.now())
  t.match((await app.inject({ url: '/orders/R1' })).json(), { status: 'Failed', attempts: 1, last_error: 'card declined' })

  const retried = await app.inject({ method: 'POST', url: '/orders/R1/retry' })
  t.equal(retried.statusCode, 200)
  t.match(retried.json(), {
    order_id: 'R1',
    status: 'Pending',
    attempts: 0,
    processing_started_at: null,
    completed_at: null,
    pending_duration: null,
    processing_duration: null,
    total_duration: null,
    last_error: 'card declined'
  })
  t.same(retried.json(), (await app.inject({ url: '/orders/R1' })).json(), 'the order as GET returns it')
  const metrics = (await app.inject({ url: '/orders/metrics' })).json()
  t.match(metrics, { pending: { count: 2 }, failed: { count: 0 }, average_pending_time: 0 }, 'the failed run no longer counts')

  const again = await app.inject({ method: 'POST', url: '/orders/R1/retry/' })
  t.equal(again.statusCode, 409)
  t.same(again.json(), { error: 'Order is Pending: only a Failed order can be retried' })
  const missing = await app.inject({ method: 'POST', url: '/orders/none/retry' })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { error: 'Order not found' })
  const bad = await app.inject({ method: 'POST', url: '/orders/-x/retry' })
  t.equal(bad.statusCode, 400)
  t.match(bad.json(), { error: /params\/order_id/ })
})

t.test('a retried order is processed again at once, and its new outcome replaces the last', async (t) => {
  const app = await build(t, { FAILURE_RATE: '1', MAX_ATTEMPTS: '1' })
  const seen: string[] = []
  t.teardown(app.store.onChanges((changes) => { for (const c of changes) seen.push(`${c.status}:${c.attempts}`) }))
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('R3') })
  await waitFor(() => seen.includes('Failed:1'), 'the order to fail')
  t.equal((await app.inject({ method: 'POST', url: '/orders/R3/retry' })).statusCode, 200)
  await waitFor(() => seen.length === 6, 'the second run to fail too')
  t.same(seen, ['Pending:0', 'Processing:1', 'Failed:1', 'Pending:0', 'Processing:1', 'Failed:1'])
  t.same(await app.store.stats(), await recount(app.store))
})

t.test('POST /orders/retry-failed retries the oldest Failed orders up to its limit, across transactions', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const ids = Array.from({ length: 2 * RETRY_CHUNK + 500 }, (_, i) => `F${String(i).padStart(5, '0')}`)
  await app.store.createMany(ids.map((id) => anOrder(id)), 1000, 1000)
  await app.store.create(anOrder('waiting'), 1000, 1000 + 3_600_000)
  await failOrders(app.store, ids.length, 2000)

  const some = await app.inject({ method: 'POST', url: '/orders/retry-failed', payload: { limit: 2 * RETRY_CHUNK + 100 } })
  t.equal(some.statusCode, 200)
  t.same(some.json(), { retried: 2 * RETRY_CHUNK + 100, remaining_failed: 400 })
  t.same((await app.store.idsByStatus('Failed', 1000)).ids, ids.slice(-400), 'the newest are left')
  t.same(await app.store.stats(), await recount(app.store))

  const rest = await app.inject({ method: 'POST', url: '/orders/retry-failed/' })
  t.same([rest.statusCode, rest.json()], [200, { retried: 400, remaining_failed: 0 }], 'no body: the default limit')
  const none = await app.inject({ method: 'POST', url: '/orders/retry-failed', payload: {} })
  t.same([none.statusCode, none.json()], [200, { retried: 0, remaining_failed: 0 }])
  t.equal((await app.store.stats()).counts.Pending, ids.length + 1)

  for (const payload of [{ limit: 0 }, { limit: 100_001 }, { limit: '5' }, { limit: 1.5 }, { limit: 5, status: 'Failed' }, []]) {
    const res = await app.inject({ method: 'POST', url: '/orders/retry-failed', payload })
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.match(res.json(), { error: /^body/ })
  }
})

t.test('GET /orders links the next page (RFC 8288) with the same filters and limit; following the links walks every order once', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const ids = Array.from({ length: 7 }, (_, i) => `N${i}`)
  for (const [i, id] of ids.entries()) await app.inject({ method: 'POST', url: '/orders', payload: anOrder(id, { user_id: i % 2 }) })
  await app.inject({ method: 'POST', url: '/orders/N2/cancel' })

  const walk = async (first: string) => {
    const listed: string[] = []
    const links: string[] = []
    let url: string | undefined = first
    while (url !== undefined) {
      const res = await app.inject({ url })
      t.equal(res.statusCode, 200, url)
      const body = res.json()
      listed.push(...body.orders.map((o: { order_id: string }) => o.order_id))
      const link = res.headers.link as string | undefined
      t.equal(link === undefined, body.next_cursor === null, `${url}: a Link exactly while there is a next page`)
      if (link === undefined) break
      links.push(link)
      const [, target] = /^<([^>]+)>; rel="next"$/.exec(link) ?? []
      t.ok(target, `${link} is a Link with rel="next"`)
      t.equal(new URLSearchParams(target!.split('?')[1]).get('cursor'), body.next_cursor, 'to the next cursor')
      url = target
    }
    return { listed, links }
  }

  const all = await walk('/orders?limit=3')
  t.same(all.listed, ids, 'every order once, oldest first')
  t.equal(all.links.length, 2)
  t.ok(all.links.every((link) => link.startsWith('</orders?limit=3&cursor=')), 'the same limit')
  const filtered = await walk('/orders/?status=Pending&user_id=0&limit=1')
  t.same(filtered.listed, ['N0', 'N4', 'N6'], 'every matching order once')
  t.ok(filtered.links.every((link) => link.startsWith('</orders?status=Pending&user_id=0&limit=1&cursor=')), 'the same filters and limit')
  const whole = await app.inject({ url: '/orders' })
  t.equal(whole.headers.link, undefined, 'no Link when all orders fit in one page')
})
