import t from 'tap'
import { build, waitFor } from './helper.ts'
import { ALLOW_PRIVATE, endpointView as view, subscribe, WebhookReceiver } from './support/webhook-receiver.ts'

// 10,000 orders with every event delivered take a while on a loaded machine, on PostgreSQL too. A
// file of its own, run beside webhook-delivery.test.ts (whose receiver down then up waits out a
// 30 s circuit cool-down). On PostgreSQL, 93 s alone on a 2-core machine, 194 s beside six other
// webhook files three at a time.
t.setTimeout(900_000)

t.test('every event of 10,000 orders is delivered exactly once, signed, each order\'s events in order', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, ALLOW_PRIVATE)
  const id = await subscribe(app, receiver, ['Pending', 'Processing', 'Completed'])
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 10_000, batch_id: 'all' } })
  t.equal(res.statusCode, 201)
  await waitFor(() => receiver.received.length >= 30_000, 'every event delivered', 600_000)
  await waitFor(async () => (await view(app, id)).deliveries.delivered === 30_000, 'every delivery recorded', 60_000)

  const byId = receiver.byId()
  t.equal(byId.size, 30_000, '30,000 distinct webhook-ids')
  t.equal(receiver.received.length, 30_000, 'each received once')
  t.equal(receiver.received.filter((r) => !r.verified).length, 0, 'every signature verifies with standardwebhooks')
  const sequences = new Map<string, string[]>()
  for (const { body } of receiver.received) sequences.set(body.data.order_id as string, [...(sequences.get(body.data.order_id as string) ?? []), body.type])
  t.equal(sequences.size, 10_000, 'events of every order')
  const outOfOrder = [...sequences].filter(([, types]) => types.join() !== 'order.pending,order.processing,order.completed')
  t.same(outOfOrder.slice(0, 5), [], 'each order\'s events arrived in the order they happened')
  t.match(await view(app, id), { deliveries: { pending: 0, delivered: 30_000, failed: 0 }, last_error: null })
})
