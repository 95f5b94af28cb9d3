import { rmSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { anOrder, build, tempDir, waitFor } from './helper.ts'
import { createDatabase, POSTGRES_URL, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'
import { fillUp, SKIP_UNLESS_ROOT, smallDisk } from './support/small-disk.ts'
import { TcpProxy } from './support/tcp-proxy.ts'
import { MAX_WAITING_CREATES } from '../src/store/pg/pg-store.ts'

/** The answer a request gets while the store refuses writes: 503 JSON, to be retried later. */
function storeUnavailable (t: Test, res: LightMyRequestResponse): void {
  t.equal(res.statusCode, 503)
  t.same(res.json(), { error: 'Store unavailable: retry later' })
  t.ok(res.headers['retry-after'], 'Retry-After says when')
}

/** Creates orders through the API, keeping the ids answered 201. */
function creator (app: FastifyInstance) {
  const answered: string[] = []
  const create = async (orderId: string) => {
    const res = await app.inject({ method: 'POST', url: '/orders', payload: anOrder(orderId) })
    if (res.statusCode === 201) answered.push(orderId)
    return res
  }
  return { answered, create }
}

t.test('a lagging event loop gets 503 + Retry-After, then service resumes', async (t) => {
  const app = await build(t, { MAX_EVENT_LOOP_DELAY_MS: '50', PROCESSOR: 'off' })
  const lag = () => { const until = Date.now() + 300; while (Date.now() < until); }
  let attempt = 0
  const refused = await waitFor(async () => {
    lag()
    const orderId = `lagged-${++attempt}`
    const res = await app.inject({ method: 'POST', url: '/orders', payload: anOrder(orderId) })
    return res.statusCode === 503 && { res, orderId }
  }, 'the overload to be noticed')
  t.equal(refused.res.headers['retry-after'], '5')
  t.same(refused.res.json(), { error: 'Service overloaded: retry after 5 s' })
  t.equal(await app.store.get(refused.orderId), undefined, 'the refused order was not created')
  await waitFor(async () => (await app.inject({ method: 'POST', url: '/orders', payload: anOrder('later') })).statusCode === 201,
    'service to resume once the loop is idle')
})

t.test('SQLite locked by another program: 503 JSON meanwhile, recovery by itself, nothing lost', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const app = await build(t, { DATABASE_URL: `sqlite:${path}`, SQLITE_BUSY_TIMEOUT_MS: '20', PROCESSOR: 'off' })
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)

  const other = new Database(path)
  other.exec('BEGIN EXCLUSIVE')
  const refused = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })
  storeUnavailable(t, refused)
  t.equal((await app.inject({ url: '/ready' })).statusCode, 503, '/ready says it cannot write')
  t.equal((await app.inject({ url: '/orders/before' })).json().status, 'Pending', 'reads still work')

  other.exec('ROLLBACK')
  other.close()
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })).statusCode, 201, 'the retry succeeds')
  t.equal((await app.store.stats()).counts.Pending, 2)
})

t.test('SQLite on a full disk: 503 JSON meanwhile, recovery by itself, nothing lost', { skip: SKIP_UNLESS_ROOT || SKIP_SQLITE_ONLY }, async (t) => {
  const dir = smallDisk(t)
  const app = await build(t, { DATABASE_URL: `sqlite:${join(dir, 'orders.db')}`, LEASE_MS: '1000' })
  const { answered, create } = creator(app)
  t.equal((await create('before')).statusCode, 201)
  // Paused while the disk is full, once 'before' is settled: a claim or settle landing between
  // /ready and the create below would take the room /ready found (seen once in CI).
  await waitFor(async () => (await app.store.stats()).counts.Completed === 1, "'before' to complete")
  t.equal((await app.inject({ method: 'POST', url: '/processing/pause' })).statusCode, 200)

  fillUp(join(dir, 'filler'))
  // Commits first reuse room the write-ahead log already has; sooner or later one needs more.
  const refused = await waitFor(async () => {
    const res = await create(`during-${answered.length}`)
    return res.statusCode !== 201 && res
  }, 'a write to need room the disk does not have')
  storeUnavailable(t, refused)
  // A checkpoint may meanwhile have freed the write-ahead log, whose file is then reused from its
  // start: the store takes writes again, disk full or not. /ready must never say ready otherwise.
  const ready = (await app.inject({ url: '/ready' })).statusCode
  if (ready === 200) t.equal((await create(`during-${answered.length}`)).statusCode, 201, '/ready said ready: a create fits too')
  else t.equal(ready, 503, '/ready says it cannot write')

  rmSync(join(dir, 'filler'))
  await waitFor(async () => (await app.inject({ url: '/ready' })).statusCode === 200, 'the store to take writes again')
  t.equal((await app.inject({ method: 'POST', url: '/processing/resume' })).statusCode, 200)
  t.equal((await create('after')).statusCode, 201)
  await waitFor(async () => (await app.store.stats()).counts.Completed === answered.length, 'every answered order to complete')
  for (const orderId of answered) t.equal((await app.store.get(orderId))?.status, 'Completed', `${orderId} completed`)
  t.equal((await app.store.stats()).counts.Processing, 0, 'no order left stuck in Processing')
})

t.test('PostgreSQL cut off and back: 503 JSON meanwhile, recovery by itself, nothing lost', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const { proxy, url } = await TcpProxy.inFrontOf(database.url)
  t.teardown(async () => { await proxy.cut(); await database.drop() })
  const app = await build(t, { DATABASE_URL: url, PROCESSOR: 'off' })

  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)
  await proxy.cut()
  const refused = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })
  storeUnavailable(t, refused)
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { error: 'Store unavailable: it does not take writes now' })
  t.equal((await app.inject({ url: '/orders/before' })).statusCode, 503, 'reads refused too, as JSON')

  await proxy.restore()
  await waitFor(async () => (await app.inject({ url: '/ready' })).statusCode === 200, 'the store to be reachable again')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })).statusCode, 201, 'the retry succeeds')
  t.equal((await app.inject({ url: '/orders/before' })).json().status, 'Pending', 'the earlier order is still there')
})

t.test('PostgreSQL turned read-only, as a standby after a failover: 503 JSON meanwhile, recovery by itself', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const name = new URL(database.url).pathname.slice(1)
  const admin = new pg.Client({ connectionString: POSTGRES_URL })
  await admin.connect()
  t.teardown(async () => { await admin.end(); await database.drop() })
  // Sessions read the setting when they start: end them so that the service reconnects to it.
  const setReadOnly = async (on: boolean) => {
    await admin.query(`ALTER DATABASE ${name} SET default_transaction_read_only = ${on ? 'on' : 'off'}`)
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name])
  }
  const app = await build(t, { DATABASE_URL: database.url, PROCESSOR: 'off' })
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)

  await setReadOnly(true)
  const refused = await waitFor(async () => {
    const res = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })
    return res.statusCode !== 201 && res
  }, 'a write to reach the read-only server')
  storeUnavailable(t, refused)
  t.equal((await app.inject({ url: '/ready' })).statusCode, 503, '/ready says it cannot write')
  t.equal((await app.inject({ url: '/orders/before' })).json().status, 'Pending', 'reads still work')

  await setReadOnly(false)
  await waitFor(async () => (await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })).statusCode === 201,
    'a retry to succeed once the server takes writes')
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  t.equal((await app.store.stats()).counts.Pending, 2, 'both orders kept, once each')
})

t.test('PostgreSQL: readiness checks stuck behind a lock fail in time and hold one connection, not the pool', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const locker = new pg.Client({ connectionString: database.url })
  t.teardown(async () => { await locker.end(); await database.drop() })
  const app = await build(t, { DATABASE_URL: database.url, PROCESSOR: 'off', DATABASE_TIMEOUT_MS: '1000' })
  await locker.connect()
  await locker.query('BEGIN')
  await locker.query('SELECT * FROM readiness_checks FOR UPDATE')

  const observer = new pg.Client({ connectionString: database.url })
  await observer.connect()
  t.teardown(() => observer.end())
  const waitingOnLocks = async () => (await observer.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]?.n

  let checksDone = false
  const checks = Promise.all(Array.from({ length: 30 }, () => app.inject({ url: '/ready' })))
    .finally(() => { checksDone = true })
  await waitFor(async () => (await waitingOnLocks()) === 1, 'the check to wait for the lock')
  t.equal((await app.inject({ url: '/orders/elsewhere' })).statusCode, 404, 'other requests still get a connection')
  t.equal(await waitingOnLocks(), 1, 'thirty checks, one query waiting')
  t.notOk(checksDone, '...while the checks wait')
  t.same((await checks).map((res) => res.statusCode), Array(30).fill(503), 'every check fails once the time limit passes')

  await locker.query('ROLLBACK')
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
})

/** A request and how long its answer took. */
async function timed<T> (request: () => Promise<T>): Promise<{ res: T, ms: number }> {
  const started = Date.now()
  const res = await request()
  return { res, ms: Date.now() - started }
}

/** DATABASE_TIMEOUT_MS in the tests below; an answer may take longer on a loaded machine, but not forever. */
const DEADLINE_MS = 1000
const LATE_MS = DEADLINE_MS + 4000

t.test('PostgreSQL table locked by another session: 503 within DATABASE_TIMEOUT_MS, waiting creates bounded, recovery by itself', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const locker = new pg.Client({ connectionString: database.url })
  const observer = new pg.Client({ connectionString: database.url })
  t.teardown(async () => { await locker.end(); await observer.end(); await database.drop() })
  const app = await build(t, { DATABASE_URL: database.url, PROCESSOR: 'off', DATABASE_TIMEOUT_MS: String(DEADLINE_MS) })
  const { answered, create } = creator(app)
  t.equal((await create('before')).statusCode, 201)
  await Promise.all([locker.connect(), observer.connect()])
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE orders')

  const refused = await timed(() => create('during'))
  storeUnavailable(t, refused.res)
  t.ok(refused.ms < LATE_MS, `POST /orders answered 503 after ${refused.ms} ms (DATABASE_TIMEOUT_MS ${DEADLINE_MS})`)
  const ready = await timed(() => app.inject({ url: '/ready' }))
  t.equal(ready.res.statusCode, 503, '/ready: a write would wait')
  t.ok(ready.ms < LATE_MS, `GET /ready answered 503 after ${ready.ms} ms`)

  // One create waits for the lock; the next ones wait for its commit, up to the bound.
  let firstAnswered = false
  const first = timed(() => create('first')).finally(() => { firstAnswered = true })
  await waitFor(async () => (await observer.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO orders%'`)).rows[0]?.n === 1,
  'the first create to wait for the lock')
  const extra = 50
  let refusedAtOnce = 0
  const flood = await Promise.all(Array.from({ length: MAX_WAITING_CREATES + extra }, async (_, i) => {
    const answer = await timed(() => create(`flood-${i}`))
    if (!firstAnswered) refusedAtOnce++
    return answer
  }))
  const { ms: firstMs } = await first
  t.equal(refusedAtOnce, extra, `beyond ${MAX_WAITING_CREATES} waiting, creates were refused without waiting ` +
    `(in ${Math.max(...flood.slice(-extra).map((answer) => answer.ms))} ms at most, while the first took ${firstMs} ms)`)
  const waited = Math.max(...flood.map((answer) => answer.ms))
  t.ok(waited < LATE_MS, `the creates that waited for its commit answered after ${waited} ms at most`)
  t.same(flood.filter(({ res }) => res.statusCode !== 503 || res.headers['retry-after'] === undefined), [], 'all 503 with Retry-After')

  await locker.query('ROLLBACK')
  await waitFor(async () => (await app.inject({ url: '/ready' })).statusCode === 200, 'the store to take writes again')
  t.equal((await app.inject({ method: 'POST', url: '/processing/resume' })).statusCode, 200)
  t.equal((await create('after')).statusCode, 201)
  t.same(answered, ['before', 'after'])
  for (const orderId of answered) t.equal((await app.inject({ url: `/orders/${orderId}` })).statusCode, 200, `${orderId} exists`)
  t.equal((await app.store.stats()).counts.Pending, 2, 'no refused create was written')
})

t.test('PostgreSQL stops answering without closing: 503 within DATABASE_TIMEOUT_MS, recovery by itself', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const { proxy, url } = await TcpProxy.inFrontOf(database.url)
  t.teardown(async () => { await proxy.cut(); await database.drop() })
  const app = await build(t, { DATABASE_URL: url, DATABASE_TIMEOUT_MS: String(DEADLINE_MS) })
  const completed = (orderId: string) => waitFor(async () =>
    (await app.inject({ url: `/orders/${orderId}` })).json().status === 'Completed', `${orderId} to be processed`)
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)
  await completed('before')

  proxy.blackHole()
  const refused = await timed(() => app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') }))
  storeUnavailable(t, refused.res)
  t.ok(refused.ms < LATE_MS, `POST /orders answered 503 after ${refused.ms} ms`)
  const read = await timed(() => app.inject({ url: '/orders/before' }))
  storeUnavailable(t, read.res)
  t.ok(read.ms < LATE_MS, `GET /orders/:id answered 503 after ${read.ms} ms`)
  const ready = await timed(() => app.inject({ url: '/ready' }))
  t.equal(ready.res.statusCode, 503)
  t.ok(ready.ms < LATE_MS, `GET /ready answered 503 after ${ready.ms} ms`)

  await proxy.restore()
  await waitFor(async () => (await app.inject({ url: '/ready' })).statusCode === 200, 'the store to answer again')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('after') })).statusCode, 201)
  await completed('after')
})

t.test('while overloaded /health stays 200 (liveness), /ready and the API answer 503', async (t) => {
  const app = await build(t, { MAX_EVENT_LOOP_DELAY_MS: '1', PROCESSOR: 'off' })
  const lag = () => { const until = Date.now() + 50; while (Date.now() < until); }
  await waitFor(async () => {
    lag()
    return (await app.inject({ url: '/ready' })).statusCode === 503
  }, 'the overload to be noticed')
  for (let i = 0; i < 20; i++) {
    lag()
    const health = await app.inject({ url: '/health' })
    t.equal(health.statusCode, 200, `/health ${i} is 200 while the loop lags`)
  }
  lag()
  t.equal((await app.inject({ url: '/orders' })).statusCode, 503, 'the API itself is refused meanwhile')
})
