import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import t, { type Test } from 'tap'
import { buildApp } from '../../src/app.ts'
import { build, tempDir, testConfig, waitFor, waitForSteady } from '../helper.ts'
import { createDatabase, SKIP_POSTGRES } from '../support/pg-database.ts'
import { recount } from '../support/store-contract.ts'

t.test('POST /orders/populate creates sim orders that get processed', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 12000, batch_id: 'b1' } })
  t.equal(res.statusCode, 201)
  t.same(res.json(), { batch_id: 'b1', total_entries: 12000, success_count: 12000, failure_count: 0, errors: [] })
  const order = await app.store.get('sim_b1_12000')
  t.ok(order)
  t.equal(order!.user_id, 0)
  t.ok(order!.item_ids.length >= 1 && order!.item_ids.length <= 3)
  t.ok(order!.item_ids.every((id) => id >= 1 && id <= 100))
  t.ok(order!.total_cents >= 1000 && order!.total_cents <= 10000)
  await waitFor(async () => (await app.store.stats()).counts.Completed === 12000, 'all populated orders completed')
})

t.test('a random batch id when none is given; a used one is a 409', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate/', payload: { total_entries: 3 } })
  t.equal(res.statusCode, 201)
  const { batch_id: batchId } = res.json()
  t.match(batchId, /^[0-9a-f]{8}$/)
  const again = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 3, batch_id: batchId } })
  t.equal(again.statusCode, 409)
  t.match(again.json(), { error: /was used before/ })
  t.equal((await app.store.stats()).counts.Pending, 3, 'the refused batch created nothing')
})

t.test('orders that already exist are counted as failures', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: { user_id: 5, order_id: 'sim_x_2', item_ids: [1], total_amount: 1 } })
  const res = (await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 3, batch_id: 'x' } })).json()
  t.same(res, { batch_id: 'x', total_entries: 3, success_count: 2, failure_count: 1, errors: ['Order sim_x_2 already exists'] })
  t.equal((await app.store.get('sim_x_2'))?.user_id, 5, 'the existing order is untouched')
})

t.test('POPULATE_MAX bounds total_entries', async (t) => {
  const app = await build(t, { PROCESSOR: 'off', POPULATE_MAX: '10' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 11 } })
  t.equal(res.statusCode, 400)
  t.same(res.json(), { error: 'body/total_entries must be <= 10' })
})

t.test('POPULATE_ENABLED=false removes the route', async (t) => {
  const app = await build(t, { POPULATE_ENABLED: 'false' })
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 1 } })
  t.equal(res.statusCode, 404)
  t.type(res.json().error, 'string')
})

t.test('a batch_id started with another total_entries is a 409 that says so', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const { store } = app
  await store.openBatch('half', 10, Date.now()) // as a call cut short before its first chunk leaves it
  const res = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 11, batch_id: 'half' } })
  t.equal(res.statusCode, 409)
  t.same(res.json(), { error: 'batch_id half was started with total_entries 10: send that to finish it, or pick another batch_id' })
  t.equal((await store.stats()).counts.Pending, 0, 'nothing created')
  t.equal((await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 10, batch_id: 'half' } })).statusCode, 201)
})

t.test('two populates of one batch at once: one does it, the other is a 409', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const request = () => app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 50_000, batch_id: 'twice' } })
  const answers = await Promise.all([request(), request()])
  t.same(answers.map((res) => res.statusCode).sort(), [201, 409])
  t.match(answers.find((res) => res.statusCode === 409)?.json(), { error: /batch_id twice (is being populated by another request|was used before)/ })
  t.equal((await app.store.stats()).counts.Pending, 50_000, 'every order once')
  t.same(await app.store.stats(), await recount(app.store))
})

const CUT_SHORT_TOTAL = 40_000

/**
 * Populates batch `cut`, two of whose orders exist already (one on each side of where the run will
 * be cut short), and expects the fault to make it a 503; the same request again then answers as if
 * the first had succeeded, every order exists once and the aggregates equal a recount.
 */
async function cutShortThenFinished (t: Test, app: FastifyInstance, clearFault: () => Promise<void>): Promise<void> {
  const populate = () => app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: CUT_SHORT_TOTAL, batch_id: 'cut' } })
  const first = await populate()
  t.equal(first.statusCode, 503, 'the fault is a 503')
  const before = (await app.store.stats()).counts.Pending
  t.ok(before > 10_000 && before < CUT_SHORT_TOTAL, `cut short after some chunks (${before} orders)`)
  await clearFault()
  const again = await populate()
  t.equal(again.statusCode, 201)
  t.same(again.json(), {
    batch_id: 'cut',
    total_entries: CUT_SHORT_TOTAL,
    success_count: CUT_SHORT_TOTAL - 2,
    failure_count: 2,
    errors: ['Order sim_cut_2 already exists', 'Order sim_cut_30000 already exists']
  }, 'answered for the whole batch')
  t.equal((await app.store.stats()).counts.Pending, CUT_SHORT_TOTAL, 'every order once')
  t.same(await app.store.stats(), await recount(app.store))
  t.equal((await populate()).statusCode, 409, 'finished now: its batch_id is used')
}

async function seedCutShortBatch (app: FastifyInstance): Promise<void> {
  for (const orderId of ['sim_cut_2', 'sim_cut_30000']) {
    await app.inject({ method: 'POST', url: '/orders', payload: { user_id: 5, order_id: orderId, item_ids: [1], total_amount: 1 } })
  }
}

t.test('SQLite: a populate cut short by a lock another program holds answers 503; the same request again finishes it', async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const app = await build(t, { DATABASE_URL: `sqlite:${path}`, SQLITE_BUSY_TIMEOUT_MS: '20', PROCESSOR: 'off' })
  await seedCutShortBatch(app)
  const other = new Database(path)
  t.teardown(() => other.close())
  let created = 0
  // Called as each chunk commits: the next one finds the database locked.
  const unsubscribe = app.store.onChanges((changes) => {
    created += changes.length
    if (created >= 12_000 && !other.inTransaction) other.exec('BEGIN EXCLUSIVE')
  })
  await cutShortThenFinished(t, app, async () => { unsubscribe(); other.exec('ROLLBACK') })
})

t.test('PostgreSQL: a populate whose database session is terminated mid-chunk answers 503; the same request again finishes it', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const [holder, admin] = [new pg.Client({ connectionString: database.url }), new pg.Client({ connectionString: database.url })]
  t.teardown(async () => { await holder.end(); await admin.end(); await database.drop() })
  const app = await build(t, { DATABASE_URL: database.url, PROCESSOR: 'off' })
  await seedCutShortBatch(app)
  await Promise.all([holder.connect(), admin.connect()])
  // An uncommitted order of the third chunk: the populate's insert waits for it, and is terminated there.
  await holder.query('BEGIN')
  await holder.query(`INSERT INTO orders (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
    VALUES ('sim_cut_12345', 5, '[1]', 100, 'Pending', 0, 0, 0)`)
  const terminated = waitFor(async () => (await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO orders%'`)).rowCount === 1,
  'the populate to wait for the uncommitted order', 30_000)
  await cutShortThenFinished(t, app, async () => { await terminated; await holder.query('ROLLBACK') })
})

t.test('a client that disconnects stops its populate', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const total = 1_000_000
  const body = JSON.stringify({ total_entries: total, batch_id: 'gone' })
  const request = http.request({ port, method: 'POST', path: '/orders/populate', headers: { 'content-type': 'application/json' } })
  request.on('error', () => {}) // the test ends the connection itself
  request.end(body)
  const pending = async () => (await app.store.stats()).counts.Pending
  await waitFor(async () => (await pending()) >= 10_000, 'the populate to be under way')
  request.destroy()
  // Stopped once the count holds still between two looks a second apart; without a stop it reaches the total.
  const stoppedAt = await waitForSteady(pending, 'the populate to stop', { everyMs: 1000, timeoutMs: 120_000 })
  t.ok(stoppedAt < total / 10, `stopped at ${stoppedAt} of ${total} orders`)
  t.same(await app.store.stats(), await recount(app.store))
})

t.test('shutting down stops a populate under way, which the same request finishes after a restart', async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const first = await buildApp(testConfig({ DATABASE_URL: `sqlite:${path}`, PROCESSOR: 'off' }), { logger: false })
  const total = 1_000_000
  const payload = { total_entries: total, batch_id: 'restart' }
  const answer = first.inject({ method: 'POST', url: '/orders/populate', payload })
  await waitFor(async () => (await first.store.stats()).counts.Pending >= 10_000, 'the populate to be under way')
  const closing = Date.now()
  await first.close()
  const closedMs = Date.now() - closing
  const stopped = await answer
  t.equal(stopped.statusCode, 503)
  t.same(stopped.json(), { error: 'the service is shutting down: send the same request again to finish the populate' })
  t.equal(stopped.headers['retry-after'], '5')
  t.ok(closedMs < 2000, `closed after ${closedMs} ms, not after the rest of the populate`)

  const second = await build(t, { DATABASE_URL: `sqlite:${path}`, PROCESSOR: 'off' })
  const kept = (await second.store.stats()).counts.Pending
  t.ok(kept < total, `${kept} orders were created before the shutdown`)
  const finished = await second.inject({ method: 'POST', url: '/orders/populate', payload })
  t.equal(finished.statusCode, 201)
  t.match(finished.json(), { batch_id: 'restart', total_entries: total, success_count: total, failure_count: 0 })
  t.equal((await second.store.stats()).counts.Pending, total)
})
