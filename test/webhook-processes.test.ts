import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { tempDir, waitFor } from './helper.ts'
import { createDatabase, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'
import { WebhookReceiver } from './support/webhook-receiver.ts'

// Real processes, killed and restarted, delivering thousands of webhooks.
t.setTimeout(600_000)

const TOTAL = 2000

/** Registers the receiver for Completed orders through a real process. */
async function subscribe (server: ServerProcess, receiver: WebhookReceiver): Promise<string> {
  const res = await server.request('/webhooks', { url: receiver.url(), events: ['Completed'] })
  if (res.status !== 201) throw new Error(JSON.stringify(res.json))
  receiver.secret = res.json.secret
  return res.json.id
}

/**
 * Waits until `server` reports every delivery done, then checks that every order's Completed event
 * arrived, each under one webhook-id, every signature verified, never two attempts of one at once.
 */
async function checkAllDelivered (t: Test, server: ServerProcess, endpointId: string, receiver: WebhookReceiver, after: string): Promise<void> {
  const endpoint = await waitFor(async () => {
    const view = (await server.request(`/webhooks/${endpointId}`)).json
    return view.deliveries.delivered === TOTAL && view
  }, `every delivery recorded ${after}`, 120_000)
  t.match(endpoint.deliveries, { pending: 0, failed: 0 })
  const idsByOrder = new Map<string, Set<string>>()
  for (const { body, id } of receiver.received) idsByOrder.set(body.data.order_id as string, (idsByOrder.get(body.data.order_id as string) ?? new Set()).add(id))
  t.equal(idsByOrder.size, TOTAL, 'every order\'s event arrived: nothing lost')
  t.same([...idsByOrder.values()].filter((ids) => ids.size !== 1).length, 0, 'each order\'s event under one webhook-id, repeats included')
  t.ok(receiver.received.every((r) => r.verified), 'every signature verifies')
  t.equal(receiver.maxConcurrentPerId, 1, 'never two attempts of one event at once')
  t.comment(`${receiver.received.length - TOTAL} repeats of events whose attempt was under way ${after}`)
}

t.test('kill -9 mid-delivery, then a restart: nothing is lost, a repeat carries the same webhook-id', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const receiver = await WebhookReceiver.start(t)
  // A slow receiver keeps many attempts under way at the kill.
  receiver.behaviour = async (_request, reply) => { await sleep(20); return reply.code(204).send() }
  const env = {
    DATABASE_URL: `sqlite:${join(tempDir(t), 'orders.db')}`,
    PENDING_DELAY_MS: '0',
    PROCESSING_TIME_MS: '0',
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_TIMEOUT_MS: '2000',
    WEBHOOK_CONCURRENCY: '20'
  }
  const first = await ServerProcess.start(env)
  t.teardown(() => { first.child.kill('SIGKILL') })
  const id = await subscribe(first, receiver)
  t.equal((await first.request('/orders/populate', { total_entries: TOTAL, batch_id: 'crash' })).status, 201)
  await waitFor(() => receiver.received.length >= 200, 'deliveries under way')
  t.equal(await first.stop('SIGKILL'), null, 'killed, not exited')
  const atKill = receiver.received.length
  t.ok(atKill < TOTAL, `killed with ${TOTAL - atKill} events left`)

  const second = await ServerProcess.start(env)
  t.teardown(() => { second.child.kill('SIGKILL') })
  await checkAllDelivered(t, second, id, receiver, 'after the restart')
  t.equal(await second.stop('SIGTERM'), 0)
})

t.test('PostgreSQL: three worker processes deliver, one killed mid-run; each event once at a time, none lost', { skip: SKIP_POSTGRES }, async (t) => {
  const receiver = await WebhookReceiver.start(t)
  receiver.behaviour = async (_request, reply) => { await sleep(5); return reply.code(204).send() }
  const database = await createDatabase()
  const processes: ServerProcess[] = []
  t.teardown(async () => {
    for (const p of processes) p.child.kill('SIGKILL')
    await database.drop()
  })
  const shared = {
    DATABASE_URL: database.url,
    PENDING_DELAY_MS: '0',
    PROCESSING_TIME_MS: '0',
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_TIMEOUT_MS: '2000',
    WEBHOOK_CONCURRENCY: '20'
  }
  const api = await ServerProcess.start({ ...shared, PROCESSOR: 'off' })
  processes.push(api)
  const id = await subscribe(api, receiver)
  const workers = await Promise.all([1, 2, 3].map(() => ServerProcess.startWorker(shared)))
  processes.push(...workers)

  t.equal((await api.request('/orders/populate', { total_entries: TOTAL, batch_id: 'workers' })).status, 201)
  await waitFor(() => receiver.received.length >= 300, 'deliveries under way')
  t.equal(await workers[0]!.stop('SIGKILL'), null, 'a worker was killed')

  await checkAllDelivered(t, api, id, receiver, 'by the surviving workers')
  for (const worker of workers.slice(1)) t.equal(await worker.stop('SIGTERM'), 0, 'a worker exits 0 on SIGTERM')
  t.equal(await api.stop('SIGTERM'), 0)
})
