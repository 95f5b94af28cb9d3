import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { anOrder, build, waitFor } from './helper.ts'
import { createDatabase, SKIP_POSTGRES } from './pg-database.ts'
import { TcpProxy } from './tcp-proxy.ts'

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

t.test('SQLite locked by another program: 503 JSON meanwhile, recovery by itself, nothing lost', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'orders-locked-')), 'orders.db')
  const app = await build(t, { DATABASE_URL: `sqlite:${path}`, SQLITE_BUSY_TIMEOUT_MS: '20', PROCESSOR: 'off' })
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)

  const other = new Database(path)
  other.exec('BEGIN EXCLUSIVE')
  const refused = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })
  t.equal(refused.statusCode, 503)
  t.same(refused.json(), { error: 'Store unavailable: retry later' })
  t.ok(refused.headers['retry-after'])
  t.equal((await app.inject({ url: '/ready' })).statusCode, 503, '/ready says it cannot write')
  t.equal((await app.inject({ url: '/orders/before' })).json().status, 'Pending', 'reads still work')

  other.exec('ROLLBACK')
  other.close()
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })).statusCode, 201, 'the retry succeeds')
  t.equal((await app.store.stats()).counts.Pending, 2)
})

t.test('PostgreSQL cut off and back: 503 JSON meanwhile, recovery by itself, nothing lost', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const url = new URL(database.url)
  const proxy = new TcpProxy(url.hostname, Number(url.port || 5432))
  await proxy.start()
  url.port = String(proxy.port)
  t.teardown(async () => { await proxy.cut(); await database.drop() })
  const app = await build(t, { DATABASE_URL: url.toString(), PROCESSOR: 'off' })

  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('before') })).statusCode, 201)
  await proxy.cut()
  const refused = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })
  t.equal(refused.statusCode, 503)
  t.same(refused.json(), { error: 'Store unavailable: retry later' })
  t.ok(refused.headers['retry-after'])
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { error: 'Store not reachable' })
  t.equal((await app.inject({ url: '/orders/before' })).statusCode, 503, 'reads refused too, as JSON')

  await proxy.restore()
  await waitFor(async () => (await app.inject({ url: '/ready' })).statusCode === 200, 'the store to be reachable again')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('during') })).statusCode, 201, 'the retry succeeds')
  t.equal((await app.inject({ url: '/orders/before' })).json().status, 'Pending', 'the earlier order is still there')
})
