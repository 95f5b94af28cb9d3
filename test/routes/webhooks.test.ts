import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { anOrder, build, waitFor } from '../helper.ts'
import { WebhookReceiver } from '../support/webhook-receiver.ts'

const ALLOW_PRIVATE = { WEBHOOK_ALLOW_PRIVATE: 'true' }

async function register (app: FastifyInstance, body: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/webhooks', payload: body })
  return { status: res.statusCode, json: res.json(), headers: res.headers }
}

t.test('POST /webhooks registers an endpoint: 201 with its secret, shown only then', async (t) => {
  const app = await build(t, { ...ALLOW_PRIVATE, PROCESSOR: 'off' })
  const res = await register(app, { url: 'http://127.0.0.1:4000/hook', description: 'fulfilment' })
  t.equal(res.status, 201)
  t.match(res.json, {
    id: /^ep_[A-Za-z0-9_-]{22}$/,
    url: 'http://127.0.0.1:4000/hook',
    events: ['Completed', 'Failed', 'Cancelled'],
    description: 'fulfilment',
    secret: /^whsec_[A-Za-z0-9+/]{43}=$/,
    enabled: true
  })
  t.ok(Buffer.from(res.json.secret.slice(6), 'base64').length >= 24, '24 or more random bytes')
  t.equal(res.headers.location, `/webhooks/${res.json.id}`)
  t.ok(Math.abs(Date.parse(res.json.created_at) - Date.now()) < 60_000)

  const one = await app.inject({ url: `/webhooks/${res.json.id}` })
  t.equal(one.statusCode, 200)
  const { secret: _secret, ...shown } = res.json
  t.same(one.json(), {
    ...shown,
    deliveries: { pending: 0, delivered: 0, failed: 0 },
    last_error: null,
    last_error_at: null,
    circuit: { state: 'closed', consecutive_failures: 0, retry_at: null }
  }, 'the same endpoint, with counts, its circuit, without its secret')
  t.notOk('secret' in one.json())
  const other = await register(app, { url: 'https://127.0.0.1/other', events: ['Pending'] })
  t.equal(other.json.description, null)
  const list = await app.inject({ url: '/webhooks' })
  t.same(list.json().webhooks.map((w: { id: string }) => w.id), [res.json.id, other.json.id], 'oldest first')
  t.notOk(list.body.includes('whsec_'), 'no secret in the list')
})

t.test('POST /webhooks refuses bad bodies with a 400 that says why, and creates nothing', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ url: 'ftp://example.com/hook' }, /only http and https/],
    [{ url: 'file:///etc/passwd' }, /only http and https/],
    [{ url: 'not a url' }, /not a URL/],
    [{ url: 'http://127.0.0.1:4000/hook' }, /127\.0\.0\.1 is a refused address \(127\.0\.0\.1 is a loopback address\).*WEBHOOK_ALLOW_PRIVATE=true/],
    [{ url: 'http://[::1]/hook' }, /loopback/],
    [{ url: 'http://localhost:4000/hook' }, /localhost resolves to a refused address .*loopback/],
    [{ url: 'http://10.1.2.3/hook' }, /private address/],
    [{ url: 'http://192.168.0.10/hook' }, /private address/],
    [{ url: 'http://169.254.169.254/latest/meta-data' }, /link-local address/],
    [{ url: 'http://[fe80::1]/hook' }, /link-local address/],
    [{ url: 'http://[::ffff:10.0.0.1]/hook' }, /private address/],
    [{ url: 'http://100.64.0.1/hook' }, /carrier-grade NAT/],
    [{ url: 'http://0.0.0.0/hook' }, /unspecified/],
    [{ url: 'http://[::127.0.0.1]/hook' }, /IPv4-compatible address \(deprecated, carrying 127\.0\.0\.1\)/],
    [{ url: 'http://[::a9fe:a9fe]/latest/meta-data' }, /IPv4-compatible address \(deprecated, carrying 169\.254\.169\.254\)/],
    [{ url: 'http://[64:ff9b::a9fe:a9fe]/hook' }, /NAT64 address carrying 169\.254\.169\.254, a link-local address/],
    [{ url: 'http://[2002:a00:1::1]/hook' }, /6to4 address carrying 10\.0\.0\.1, a private address/],
    [{ url: 'https://user:pw@93.184.216.34/hook' }, /body\/url: a URL may not hold a user name or password: receivers authenticate webhooks by their signature/],
    [{ url: 'https://token@93.184.216.34/hook' }, /may not hold a user name or password/],
    [{ url: 'https://example.com/hook', events: [] }, /body\/events must NOT have fewer than 1 items/],
    [{ url: 'https://example.com/hook', events: ['Shipped'] }, /body\/events\/0 must be one of: Pending, Processing, Completed, Failed, Cancelled/],
    [{ url: 'https://example.com/hook', events: ['Completed', 'Completed'] }, /body\/events must NOT have duplicate items/],
    [{ url: 'https://example.com/hook', secret: 'mine' }, /body has unknown field 'secret'/],
    [{ events: ['Completed'] }, /body is missing required field 'url'/]
  ]
  for (const [body, error] of cases) {
    const res = await register(app, body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.match(res.json, { error }, JSON.stringify(body))
  }
  t.same((await app.inject({ url: '/webhooks' })).json(), { webhooks: [] })
})

t.test('WEBHOOK_ALLOW_PRIVATE=true lets a receiver on this machine or network register; multicast never', async (t) => {
  const app = await build(t, { ...ALLOW_PRIVATE, PROCESSOR: 'off' })
  for (const url of ['http://127.0.0.1:4000/hook', 'http://localhost:4000/hook', 'http://10.1.2.3/hook', 'http://[::1]:4000/']) {
    t.equal((await register(app, { url })).status, 201, url)
  }
  t.match(await register(app, { url: 'http://224.0.0.1/hook' }), { status: 400, json: { error: /multicast/ } })
  t.match(await register(app, { url: 'http://[::127.0.0.1]:4000/hook' }), { status: 400, json: { error: /IPv4-compatible/ } }, 'IPv4-compatible: never')
  t.match(await register(app, { url: 'http://user:pw@127.0.0.1:4000/hook' }), { status: 400, json: { error: /by their signature/ } }, 'credentials: never')
})

t.test('unknown and malformed endpoint ids; DELETE; at most 100 endpoints', async (t) => {
  const app = await build(t, { ...ALLOW_PRIVATE, PROCESSOR: 'off' })
  const unknown = 'ep_AAAAAAAAAAAAAAAAAAAAAA'
  for (const [method, url] of [['GET', ''], ['DELETE', ''], ['POST', '/test'], ['POST', '/redeliver'], ['GET', '/deliveries']] as const) {
    const res = await app.inject({ method, url: `/webhooks/${unknown}${url}` })
    t.equal(res.statusCode, 404, `${method} ${url}`)
    t.same(res.json(), { error: 'Webhook endpoint not found' })
    t.equal((await app.inject({ method, url: `/webhooks/nope${url}` })).statusCode, 400, `${method} ${url}: malformed id`)
  }
  const { json: endpoint } = await register(app, { url: 'http://127.0.0.1:4000/hook' })
  const deleted = await app.inject({ method: 'DELETE', url: `/webhooks/${endpoint.id}` })
  t.equal(deleted.statusCode, 204)
  t.equal(deleted.body, '')
  t.equal((await app.inject({ url: `/webhooks/${endpoint.id}` })).statusCode, 404)
  for (let i = 0; i < 100; i++) t.equal((await register(app, { url: `http://127.0.0.1:4000/${i}` })).status, 201)
  t.match(await register(app, { url: 'http://127.0.0.1:4000/101' }), { status: 409, json: { error: /At most 100 webhook endpoints/ } })
})

t.test('status changes reach a real receiver, signed (standardwebhooks verifies them), with the order as GET returns it', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, ALLOW_PRIVATE)
  const { json: endpoint } = await register(app, { url: receiver.url(), events: ['Pending', 'Completed'] })
  receiver.secret = endpoint.secret
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('W1') })
  await waitFor(() => receiver.received.length === 2, 'both events')
  t.ok(receiver.received.every((r) => r.verified), 'every signature verifies')
  t.same(receiver.received.map((r) => r.body.type), ['order.pending', 'order.completed'])
  const completed = receiver.received[1]!
  t.same(completed.body.data, (await app.inject({ url: '/orders/W1' })).json(), 'the order as GET returns it')
  t.match(completed.id, /^msg_/)
  t.ok(Math.abs(completed.timestamp - Date.now() / 1000) < 60, 'webhook-timestamp in seconds')
  t.equal(completed.body.timestamp, completed.body.data.completed_at, 'the time of the change')
  await waitFor(async () => (await app.inject({ url: `/webhooks/${endpoint.id}` })).json().deliveries.delivered === 2, 'both counted delivered')

  const test = await app.inject({ method: 'POST', url: `/webhooks/${endpoint.id}/test` })
  t.equal(test.statusCode, 202)
  await waitFor(() => receiver.received.length === 3, 'the test event')
  t.match(receiver.received[2], { id: test.json().delivery_id, verified: true, body: { type: 'webhook.test', data: { endpoint_id: endpoint.id } } })
  // The receiver has it before the sender records the answer.
  await waitFor(async () => (await app.inject({ url: `/webhooks/${endpoint.id}` })).json().deliveries.delivered === 3, 'the test event counted delivered')

  const page = await app.inject({ url: `/webhooks/${endpoint.id}/deliveries?status=delivered&limit=2` })
  t.equal(page.statusCode, 200)
  t.match(page.json().deliveries, [
    { id: test.json().delivery_id, order_id: null, event_type: 'webhook.test', status: 'delivered', attempts: 1, last_status_code: 204 },
    { id: completed.id, order_id: 'W1', event_type: 'order.completed' }
  ])
  const next = await app.inject({ url: `/webhooks/${endpoint.id}/deliveries?status=delivered&cursor=${page.json().next_cursor}` })
  t.match(next.json(), { deliveries: [{ event_type: 'order.pending' }], next_cursor: null })
  t.equal((await app.inject({ url: `/webhooks/${endpoint.id}/deliveries?cursor=made-up` })).statusCode, 400)
})

t.test('a receiver that keeps failing: retried on the schedule, then failed with its error; redeliver sends them again, same webhook-id', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  receiver.behaviour = async (_request, reply) => reply.code(503).send('down for maintenance')
  const app = await build(t, { ...ALLOW_PRIVATE, WEBHOOK_RETRY_SCHEDULE: '10ms,20ms' })
  const { json: endpoint } = await register(app, { url: receiver.url(), events: ['Completed'] })
  receiver.secret = endpoint.secret
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('F1') })
  const failed = await waitFor(async () => {
    const view = (await app.inject({ url: `/webhooks/${endpoint.id}` })).json()
    return view.deliveries.failed === 1 && view
  }, 'the delivery to fail')
  t.equal(receiver.received.length, 3, 'the first attempt and one per step of the schedule')
  t.equal(new Set(receiver.received.map((r) => r.id)).size, 1, 'every attempt has the same webhook-id')
  t.match(failed, { deliveries: { pending: 0, delivered: 0, failed: 1 }, last_error: 'HTTP 503 Service Unavailable' })
  const [delivery] = (await app.inject({ url: `/webhooks/${endpoint.id}/deliveries` })).json().deliveries
  t.match(delivery, { status: 'failed', attempts: 3, last_status_code: 503, last_error: 'HTTP 503 Service Unavailable', next_attempt_at: null })

  receiver.behaviour = async (_request, reply) => reply.code(200).send()
  t.same((await app.inject({ method: 'POST', url: `/webhooks/${endpoint.id}/redeliver` })).json(), { redelivered: 1 })
  await waitFor(async () => (await app.inject({ url: `/webhooks/${endpoint.id}` })).json().deliveries.delivered === 1, 'delivered after all')
  t.equal(receiver.received.at(-1)!.id, delivery.id, 'the same webhook-id')
})

t.test('webhook routes need the API key when it is set', async (t) => {
  const app = await build(t, { PROCESSOR: 'off', API_KEY: 'a-long-enough-secret-key' })
  for (const [method, url] of [['GET', '/webhooks'], ['POST', '/webhooks'], ['GET', '/webhooks/ep_AAAAAAAAAAAAAAAAAAAAAA']] as const) {
    t.equal((await app.inject({ method, url, payload: method === 'POST' ? { url: 'https://example.com' } : undefined })).statusCode, 401, `${method} ${url}`)
  }
})

t.test('a list cursor is accepted only by the list that issued it: not by another endpoint\'s deliveries, nor across /orders and deliveries', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  // The deliverer runs beside the processor. The overload guard off: a busy machine is not what this is about.
  const app = await build(t, { ...ALLOW_PRIVATE, MAX_EVENT_LOOP_DELAY_MS: '0' })
  const endpoints = [(await register(app, { url: receiver.url() })).json, (await register(app, { url: receiver.url() })).json]
  for (const endpoint of endpoints) {
    for (let i = 0; i < 2; i++) t.equal((await app.inject({ method: 'POST', url: `/webhooks/${endpoint.id}/test` })).statusCode, 202)
  }
  for (const endpoint of endpoints) {
    await waitFor(async () => (await app.inject({ url: `/webhooks/${endpoint.id}` })).json().deliveries.delivered === 2, 'both test events delivered')
  }
  const deliveriesCursor = async (id: string) =>
    (await app.inject({ url: `/webhooks/${id}/deliveries?status=delivered&limit=1` })).json().next_cursor as string
  const [a, b] = [await deliveriesCursor(endpoints[0].id), await deliveriesCursor(endpoints[1].id)]
  for (const i of [1, 2]) await app.inject({ method: 'POST', url: '/orders', payload: anOrder(`C${i}`) })
  const ordersCursor = (await app.inject({ url: '/orders?limit=1' })).json().next_cursor as string
  t.ok(a && b && ordersCursor, 'each list has a next page')

  const refused = { error: 'querystring/cursor was not issued for this list: send the next_cursor it answered, or start again without a cursor' }
  for (const [url, what] of <Array<[string, string]>>[
    [`/webhooks/${endpoints[1].id}/deliveries?status=delivered&cursor=${a}`, 'another endpoint\'s deliveries cursor'],
    [`/webhooks/${endpoints[0].id}/deliveries?status=delivered&cursor=${ordersCursor}`, 'a cursor of /orders sent to deliveries'],
    [`/orders?cursor=${a}`, 'a deliveries cursor sent to /orders']
  ]) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 400, what)
    t.same(res.json(), refused, what)
  }
  t.equal((await app.inject({ url: `/webhooks/${endpoints[0].id}/deliveries?status=delivered&cursor=${a}` })).statusCode, 200, 'its own list takes it')
})
