import { readdirSync } from 'node:fs'
import t, { type Test } from 'tap'
import { openStore } from '../src/store/open-store.ts'
import type { OrderStore } from '../src/store/order-store.ts'
import { systemResolve } from '../src/webhooks/destination.ts'
import { WebhookDeliverer } from '../src/webhooks/deliverer.ts'
import { WebhookSender } from '../src/webhooks/sender.ts'
import { anOrder, testConfig, waitFor } from './helper.ts'
import { createDatabase, POSTGRES_URL } from './support/pg-database.ts'
import { recordingLog } from './support/recording-log.ts'
import { WebhookReceiver } from './support/webhook-receiver.ts'

// Ten bursts delivered take a while on a loaded machine, on PostgreSQL too.
t.setTimeout(180_000)

const openFds = () => readdirSync('/proc/self/fd').length

/** A store on SQLite in memory, or on a PostgreSQL database of its own when DATABASE_URL names a server. */
async function aStore (t: Test): Promise<OrderStore> {
  const database = POSTGRES_URL ? await createDatabase() : undefined
  const store = await openStore(testConfig(database && { DATABASE_URL: database.url }), recordingLog())
  t.teardown(async () => { await store.close(); await database?.drop() })
  return store
}

t.test('10 endpoints created, sent a burst and deleted leave no connection open, without waiting for idle ones to time out', async (t) => {
  const receivers = await Promise.all(Array.from({ length: 10 }, () => WebhookReceiver.start(t)))
  const store = await aStore(t)
  // Idle connections would stay a minute: only the deletion can close them within the test.
  const sender = new WebhookSender({ timeoutMs: 5000, allowPrivate: true, resolve: systemResolve, idleMs: 60_000 })
  const deliverer = new WebhookDeliverer(store, { concurrency: 32, endpointConcurrency: 32, timeoutMs: 5000, retrySchedule: [100], sender })
  deliverer.start()
  t.teardown(() => deliverer.stop(0))
  const baseline = openFds()

  for (const [i, receiver] of receivers.entries()) {
    const id = `ep_cycle_${i}`
    await store.createEndpoint({ id, url: receiver.url(), events: ['Pending'], description: null, secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0' }, Date.now(), 100)
    await store.createMany(Array.from({ length: 64 }, (_, n) => anOrder(`C${i}-${n}`)), Date.now(), Date.now() + 3_600_000)
    await waitFor(async () => (await store.endpoint(id))?.counts.delivered === 64, `the burst to endpoint ${i} delivered`)
    // A few idle connections per origin are kept (each is two descriptors here: this process receives too).
    await waitFor(() => openFds() <= baseline + 2 * 4 + 4, `at most 4 idle connections kept to endpoint ${i} (${openFds() - baseline} descriptors over)`)
    await store.deleteEndpoint(id, Date.now())
  }
  const left = await waitFor(() => { const fds = openFds(); return fds <= baseline + 4 && fds }, 'the descriptors back to where they were', 10_000)
  t.pass(`${baseline} descriptors before the cycles, ${left} after`)
})
