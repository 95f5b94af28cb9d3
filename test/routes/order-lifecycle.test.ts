import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { anOrder, build, waitFor } from '../helper.ts'
import { recount } from '../support/store-contract.ts'
import { WebhookReceiver } from '../support/webhook-receiver.ts'

const LEASE = 30_000

/** Takes the app's oldest Pending orders to Completed (ok) or Failed, through its real store. */
async function settleNext (app: FastifyInstance, count: number, ok: boolean): Promise<void> {
  const claims = await app.store.claim(count, Date.now(), LEASE)
  await app.store.settle(claims.map((claim) => ok ? { claim, ok: true as const } : { claim, ok: false as const, error: 'x', retryAt: null }), Date.now())
}

async function create (app: FastifyInstance, orderId: string, userId = 1): Promise<void> {
  const created = await app.inject({ method: 'POST', url: '/orders', payload: anOrder(orderId, { user_id: userId }) })
  if (created.statusCode !== 201) throw new Error(`create ${orderId}: ${created.statusCode} ${created.body}`)
}

const status = async (app: FastifyInstance, orderId: string) => (await app.inject({ url: `/orders/${orderId}` })).statusCode

t.test('ORDER_RETENTION deletes Completed and Cancelled orders once past it; Failed ones follow FAILED_ORDER_RETENTION; the metrics stay a recount', async (t) => {
  const app = await build(t, { PROCESSOR: 'off', ORDER_RETENTION: '300ms', FAILED_ORDER_RETENTION: 'off' })
  await create(app, 'failed')
  await settleNext(app, 1, false)
  await create(app, 'done')
  await settleNext(app, 1, true)
  await create(app, 'cancelled')
  t.equal((await app.inject({ method: 'POST', url: '/orders/cancelled/cancel' })).statusCode, 200)
  await create(app, 'waiting')
  await waitFor(async () => await status(app, 'done') === 404 && await status(app, 'cancelled') === 404, 'the finished orders to be swept')
  t.equal(await status(app, 'failed'), 200, 'a Failed order is kept: FAILED_ORDER_RETENTION is off')
  t.equal(await status(app, 'waiting'), 200, 'a Pending order is never swept')
  t.same(await app.store.stats(), await recount(app.store))
  const metrics = (await app.inject({ url: '/orders/metrics' })).json()
  t.match(metrics, { total_orders: 2, completed: { count: 0 }, cancelled: { count: 0 }, failed: { count: 1 }, pending: { count: 1 } })
  const prometheus = (await app.inject({ url: '/metrics' })).body
  t.match(prometheus, /orders_deleted_total\{reason="retention"\} 2/)
  t.match(prometheus, /store_disk_bytes \d+/)
})

t.test('DELETE /orders/:order_id erases a finished order; Pending is a 409 naming its status; unknown is a 404', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await create(app, 'A')
  await settleNext(app, 1, true)
  await create(app, 'P')
  const erased = await app.inject({ method: 'DELETE', url: '/orders/A' })
  t.equal(erased.statusCode, 204)
  t.equal(erased.body, '')
  t.equal(await status(app, 'A'), 404)
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/A' })).statusCode, 404, 'erased once')
  const pending = await app.inject({ method: 'DELETE', url: '/orders/P' })
  t.equal(pending.statusCode, 409)
  t.match(pending.json(), { error: /^Order is Pending: .*cancel it first/ })
  t.equal(await status(app, 'P'), 200)
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/nope' })).statusCode, 404)
  t.same(await app.store.stats(), await recount(app.store))
  t.match((await app.inject({ url: '/metrics' })).body, /orders_deleted_total\{reason="erasure"\} 1/)
})

t.test("DELETE /orders?user_id=N erases the customer's finished orders in the background (202), refused cross-site", async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  for (const id of ['u1', 'u2', 'u3']) await create(app, id, 7)
  await create(app, 'other', 8)
  await settleNext(app, 4, true)
  await create(app, 'u4', 7)
  const crossSite = await app.inject({ method: 'DELETE', url: '/orders?user_id=7', headers: { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' } })
  t.equal(crossSite.statusCode, 403)
  t.equal((await app.inject({ method: 'DELETE', url: '/orders' })).statusCode, 400, 'no customer: refused, nothing erased')
  const accepted = await app.inject({ method: 'DELETE', url: '/orders?user_id=7' })
  t.equal(accepted.statusCode, 202)
  t.equal(accepted.headers.location, '/orders?user_id=7')
  t.match(accepted.json(), { user_id: 7, follow: '/orders?user_id=7' })
  const left = await waitFor(async () => {
    const { orders } = (await app.inject({ url: '/orders?user_id=7' })).json() as { orders: Array<{ order_id: string }> }
    return orders.length === 1 && orders
  }, 'the erasure to finish')
  t.same(left.map((o) => o.order_id), ['u4'], 'the Pending order stays')
  t.equal(await status(app, 'other'), 200, "another customer's order stays")
  t.same(await app.store.stats(), await recount(app.store))
})

t.test('an erasure sends order.deleted, signed, with ids only, to a real receiver of an endpoint subscribed to Deleted', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, { WEBHOOK_ALLOW_PRIVATE: 'true', PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0' })
  const registered = await app.inject({ method: 'POST', url: '/webhooks', payload: { url: receiver.url(), events: ['Completed', 'Deleted'] } })
  t.equal(registered.statusCode, 201)
  t.same(registered.json().events, ['Completed', 'Deleted'])
  receiver.secret = registered.json().secret
  await create(app, 'E', 5)
  await waitFor(() => receiver.received.length === 1, 'order.completed')
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/E' })).statusCode, 204)
  await waitFor(() => receiver.received.length === 2, 'order.deleted')
  const deleted = receiver.received[1]!
  t.ok(deleted.verified, 'its signature verifies')
  t.equal(deleted.body.type, 'order.deleted')
  t.same(deleted.body.data, { order_id: 'E', user_id: 5, reason: 'erased' }, 'ids only')
  // The receiver has it before the sender records the answer.
  const delivered = await waitFor(async () => {
    const { deliveries } = (await app.inject({ url: `/webhooks/${registered.json().id}/deliveries?status=delivered` })).json() as { deliveries: Array<{ event_type: string }> }
    return deliveries.length > 0 && deliveries
  }, 'order.deleted counted delivered')
  t.same(delivered.map((d) => d.event_type), ['order.deleted'], "the erasure deleted the order's other delivery, not this one")
  t.equal((await app.inject({ method: 'POST', url: '/webhooks', payload: { url: receiver.url(), events: ['Removed'] } })).statusCode, 400, 'an unknown event is refused')
})
