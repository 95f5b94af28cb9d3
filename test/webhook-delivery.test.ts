import { join } from 'node:path'
import t from 'tap'
import { buildApp } from '../src/app.ts'
import { MAX_RESPONSE_BYTES } from '../src/webhooks/sender.ts'
import { anOrder, build, tempDir, testConfig, waitFor, type Settings } from './helper.ts'
import { ALLOW_PRIVATE, endpointView as view, subscribe, WebhookReceiver } from './support/webhook-receiver.ts'

// Receivers down, slow, redirecting or answering at length (every event of 10,000 orders: webhook-delivery-volume.test.ts).
t.setTimeout(600_000)

t.test('a receiver down for a while, then up: everything is delivered, with the same webhook-ids', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, { ...ALLOW_PRIVATE, WEBHOOK_RETRY_SCHEDULE: '100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s' })
  const id = await subscribe(app, receiver, ['Completed'])
  await receiver.down()
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 200, batch_id: 'down' } })
  const failing = await waitFor(async () => {
    const endpoint = await view(app, id)
    return endpoint.last_error !== null && endpoint
  }, 'attempts to fail')
  t.match(failing, { deliveries: { pending: 200, delivered: 0 }, last_error: /ECONNREFUSED/ })
  await receiver.up()
  await waitFor(async () => (await view(app, id)).deliveries.delivered === 200, 'all delivered once the receiver is up', 60_000)
  t.equal(receiver.byId().size, 200)
  t.equal(receiver.received.length, 200, 'each once: attempts that found no receiver reached nobody')
  t.ok(receiver.received.every((r) => r.verified))
})

t.test('redirects are not followed: a 3xx is a failed attempt', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  receiver.behaviour = async (request, reply) => (request.url === '/old' ? reply.code(301).header('location', receiver.url('/new')).send() : reply.code(204).send())
  const app = await build(t, { ...ALLOW_PRIVATE, WEBHOOK_RETRY_SCHEDULE: '1h' })
  const id = await subscribe(app, receiver, ['Completed'], '/old')
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('R1') })
  const endpoint = await waitFor(async () => { const v = await view(app, id); return v.last_error !== null && v }, 'the attempt')
  t.match(endpoint.last_error, /^HTTP 301 Moved Permanently: redirects are not followed \(Location: http:\/\/127\.0\.0\.1:\d+\/new\)$/)
  t.same(receiver.received.map((r) => r.path), ['/old'], 'nothing was sent to the Location')
})

t.test('a slow receiver is cut off at WEBHOOK_TIMEOUT_MS', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  receiver.behaviour = async (_request, reply) => { await held; return reply.code(204).send() }
  const app = await build(t, { ...ALLOW_PRIVATE, WEBHOOK_TIMEOUT_MS: '300', WEBHOOK_RETRY_SCHEDULE: '1h' })
  const id = await subscribe(app, receiver, ['Completed'])
  const started = Date.now()
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('S1') })
  const endpoint = await waitFor(async () => { const v = await view(app, id); return v.last_error !== null && v }, 'the attempt to time out')
  t.equal(endpoint.last_error, 'no answer within WEBHOOK_TIMEOUT_MS (300 ms)')
  t.ok(Date.now() - started < 10_000, 'long before the receiver answers')
  t.equal(endpoint.deliveries.pending, 1, 'to be tried again')
})

t.test('a huge answer is read at most 64 KiB; the connection is cut, the 2xx still counts', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const sent = { bytes: 0, finished: false, closed: false }
  receiver.behaviour = async (_request, reply) => {
    const chunk = Buffer.alloc(16 * 1024, 'x')
    reply.hijack()
    const raw = reply.raw
    raw.on('close', () => { sent.closed = true })
    raw.writeHead(200, { 'content-type': 'text/plain' })
    // 64 MiB, written as the client reads.
    for (let i = 0; i < 4096 && !raw.destroyed; i++) {
      sent.bytes += chunk.length
      if (!raw.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = () => { raw.off('drain', done); raw.off('close', done); resolve() }
          raw.on('drain', done).on('close', done)
        })
      }
    }
    sent.finished = !raw.destroyed
    raw.end()
  }
  const app = await build(t, ALLOW_PRIVATE)
  const id = await subscribe(app, receiver, ['Completed'])
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('H1') })
  await waitFor(async () => (await view(app, id)).deliveries.delivered === 1, 'delivered')
  await waitFor(() => sent.closed, 'the connection cut by the sender')
  t.ok(sent.bytes < 8 * 1024 * 1024, `the receiver could write only ${sent.bytes} bytes (socket buffers plus ${MAX_RESPONSE_BYTES} read) of 64 MiB`)
  t.notOk(sent.finished, 'the answer was not read to its end')
})

t.test('a destination refused at delivery time (WEBHOOK_ALLOW_PRIVATE turned off since) is never contacted', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const path = join(tempDir(t), 'orders.db')
  const start = async (settings: Settings) => {
    const app = await buildApp(testConfig({ DATABASE_URL: `sqlite:${path}`, WEBHOOK_RETRY_SCHEDULE: '1h', ...settings }), { logger: false })
    await app.ready()
    return app
  }
  const before = await start({ ...ALLOW_PRIVATE, PROCESSOR: 'off' })
  const id = await subscribe(before, receiver, ['Completed'])
  await before.close()
  const after = await start({})
  t.teardown(() => after.close())
  await after.inject({ method: 'POST', url: '/orders', payload: anOrder('P1') })
  const endpoint = await waitFor(async () => { const v = await view(after, id); return v.last_error !== null && v }, 'the attempt')
  t.match(endpoint.last_error, /127\.0\.0\.1 is a refused address \(127\.0\.0\.1 is a loopback address\)/)
  t.same(receiver.received, [], 'the receiver got nothing')
})

t.test('shutting down hands attempts under way back, uncounted; the next process sends them with the same webhook-id', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  receiver.behaviour = async (_request, reply) => { await held; return reply.code(204).send() }
  const path = join(tempDir(t), 'orders.db')
  const config = testConfig({ ...ALLOW_PRIVATE, DATABASE_URL: `sqlite:${path}`, SHUTDOWN_GRACE_MS: '200' })
  const first = await buildApp(config, { logger: false })
  await first.ready()
  const id = await subscribe(first, receiver, ['Completed'])
  await first.inject({ method: 'POST', url: '/orders', payload: anOrder('G1') })
  await waitFor(() => receiver.received.length === 1, 'the attempt under way')
  await first.close()
  release()
  const second = await buildApp(config, { logger: false })
  await second.ready()
  t.teardown(() => second.close())
  await waitFor(async () => (await view(second, id)).deliveries.delivered === 1, 'delivered by the next process')
  t.equal(receiver.received.length, 2)
  t.equal(receiver.received[0]!.id, receiver.received[1]!.id, 'the same webhook-id')
  const [delivery] = (await second.inject({ url: `/webhooks/${id}/deliveries?status=delivered` })).json().deliveries
  t.equal(delivery.attempts, 1, 'the cut attempt did not count')
})

t.test('a fault of this process while sending (an attempt listener that throws) leaves the delivery to its lease, sent again, and frees its slot', async (t) => {
  const receiver = await WebhookReceiver.start(t)
  const app = await build(t, { ...ALLOW_PRIVATE, WEBHOOK_CONCURRENCY: '1', WEBHOOK_TIMEOUT_MS: '1000' })
  let thrown = 0
  app.deliverer!.onAttempt(() => { if (thrown++ === 0) throw new Error('a listener that throws') })
  const id = await subscribe(app, receiver, ['Completed'])
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('L1') })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('L2') })
  // L1's first attempt reached the receiver, then the listener threw; L2 still goes out (the only
  // slot was freed), and L1 again once its lease has ended, under the same webhook-id.
  await waitFor(async () => (await view(app, id)).deliveries.delivered === 2, 'both delivered', 30_000)
  const l1 = receiver.received.filter((r) => r.body.data.order_id === 'L1')
  t.equal(l1.length, 2, 'L1 sent twice')
  t.equal(l1[0]!.id, l1[1]!.id, 'under the same webhook-id')
  t.equal(receiver.received.filter((r) => r.body.data.order_id === 'L2').length, 1)
})
