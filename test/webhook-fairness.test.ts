import { createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { build, waitFor } from './helper.ts'
import { WebhookReceiver } from './support/webhook-receiver.ts'

t.setTimeout(180_000)

/** A receiver that accepts connections and never answers. */
async function blackHole (t: Test): Promise<string> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => { sockets.add(socket) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const socket of sockets) socket.destroy(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
}

t.test('a receiver that never answers does not hold up a healthy one: 300 events each, all of the healthy one\'s in time', async (t) => {
  const healthy = await WebhookReceiver.start(t)
  const dead = await blackHole(t)
  const app = await build(t, { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_TIMEOUT_MS: '5000' })
  for (const url of [dead, healthy.url()]) {
    const res = await app.inject({ method: 'POST', url: '/webhooks', payload: { url, events: ['Pending'] } })
    t.equal(res.statusCode, 201, res.body)
    if (url !== dead) healthy.secret = res.json().secret
  }
  const started = Date.now()
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 300, batch_id: 'fair' } })
  t.equal(res.statusCode, 201, res.body)
  // The goal is 10 s; before the cap it took over 40 s.
  await waitFor(() => healthy.received.length >= 300, 'all 300 events at the healthy receiver', 15_000)
  const seconds = (Date.now() - started) / 1000
  t.pass(`300 delivered to the healthy receiver in ${seconds.toFixed(1)} s (${(300 / seconds).toFixed(0)} deliveries/s)`)
})
