import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { OrderStore } from '../src/store/order-store.ts'
import { PURGE_BATCH } from '../src/store/webhook-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, build, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES } from './support/pg-database.ts'

const HISTORY = 250_000
const PAYLOAD = JSON.stringify({ type: 'order.completed', timestamp: '2026-01-01T00:00:00.000Z', data: { order_id: 'x'.repeat(36), padding: 'y'.repeat(200) } })

/** A database the test reaches around the service, to insert a long history in one statement and count what is left. */
interface RawDatabase {
  /** The service's DATABASE_URL */
  url: string
  /** Delivered deliveries of one endpoint, as a long history leaves them. */
  insertHistory: (endpointId: string, rows: number) => Promise<void>
  /** `SELECT count(*) AS count ...`, parameters written $1, $2... */
  count: (sql: string, params: unknown[]) => Promise<number>
  /** A store on the database (opened again after a stop). */
  open: () => Promise<OrderStore>
}

const STORES = [['SQLite', false], ['PostgreSQL', SKIP_POSTGRES]] as const

async function rawDatabase (t: Test, kind: typeof STORES[number][0]): Promise<RawDatabase> {
  if (kind === 'SQLite') {
    const path = join(tempDir(t), 'orders.db')
    // The service's migrations, run as it starts.
    await new SqliteStore(path).close()
    const db = new Database(path)
    t.teardown(() => db.close())
    return {
      url: `sqlite:${path}`,
      insertHistory: async (endpointId, rows) => {
        db.prepare(`WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
          INSERT INTO webhook_deliveries (id, endpoint_id, order_id, event_type, payload, status, attempts, created_at, delivered_at, updated_at)
          SELECT 'msg_old_' || i, ?, 'old-' || i, 'order.completed', ?, 'delivered', 1, 1000, 1000, 1000 FROM n`).run(rows, endpointId, PAYLOAD)
      },
      count: async (sql, params) => db.prepare(sql.replace(/\$\d+/g, '?')).pluck().get(...params) as number,
      open: async () => new SqliteStore(path)
    }
  }
  const database = await createDatabase()
  const client = new pg.Client({ connectionString: database.url })
  await client.connect()
  t.teardown(async () => { await client.end(); await database.drop() })
  // The service's migrations, run as it starts.
  await (await openPgStore(database.url)).close()
  return {
    url: database.url,
    insertHistory: async (endpointId, rows) => {
      await client.query(`INSERT INTO webhook_deliveries (id, endpoint_id, order_id, event_type, payload, status, attempts, created_at, delivered_at, updated_at)
        SELECT 'msg_old_' || i, $2, 'old-' || i, 'order.completed', $3, 'delivered', 1, 1000, 1000, 1000 FROM generate_series(1, $1::int) AS i`,
      [rows, endpointId, PAYLOAD])
      await client.query('ANALYZE webhook_deliveries')
    },
    count: async (sql, params) => Number((await client.query<{ count: string }>(sql, params)).rows[0]?.count),
    open: async () => openPgStore(database.url)
  }
}

const left = (db: RawDatabase, endpointId: string) => db.count('SELECT count(*) AS count FROM webhook_deliveries WHERE endpoint_id = $1', [endpointId])
const purging = (db: RawDatabase) => db.count('SELECT count(*) AS count FROM webhook_endpoint_purges', [])

for (const [kind, skip] of STORES) {
  t.test(`${kind}: DELETE /webhooks/:id with ${HISTORY} deliveries answers at once, no event is recorded for it after, its deliveries go in the background`, { skip, timeout: 300_000 }, async (t) => {
    const db = await rawDatabase(t, kind)
    // The overload guard off: inserting the history in this process holds its event loop.
    const app = await build(t, { DATABASE_URL: db.url, WEBHOOK_ALLOW_PRIVATE: 'true' })
    const register = async (path: string) => {
      const res = await app.inject({ method: 'POST', url: '/webhooks', payload: { url: `http://127.0.0.1:9/${path}`, events: ['Completed'] } })
      t.equal(res.statusCode, 201, res.body)
      return res.json() as { id: string }
    }
    const doomed = await register('doomed')
    const kept = await register('kept')
    await db.insertHistory(doomed.id, HISTORY)

    const delay = monitorEventLoopDelay({ resolution: 10 })
    delay.enable()
    const started = performance.now()
    const res = await app.inject({ method: 'DELETE', url: `/webhooks/${doomed.id}` })
    const took = performance.now() - started
    t.equal(res.statusCode, 204, `deleted (${res.body})`)
    const purgeStarted = performance.now()
    // Removed PURGE_BATCH a transaction with pauses between (the size checked by the stop test
    // below), most of the history is still there once the DELETE answered. Not "all but a batch or
    // two": on PostgreSQL the removal runs beside this count, and in CI 13 batches went while it
    // ran (237,000 left); half would take it seconds. (A deadline on the DELETE said this before,
    // and failed registrations of a loaded machine's CI.)
    const leftAtAnswer = await left(db, doomed.id)
    t.ok(leftAtAnswer > HISTORY - 125 * PURGE_BATCH, `its deliveries go after the answer (${leftAtAnswer} left at once)`)
    t.equal((await app.inject({ url: `/webhooks/${doomed.id}` })).statusCode, 404, 'gone at once')
    t.same((await app.inject({ url: '/webhooks' })).json().webhooks.map((w: { id: string }) => w.id), [kept.id], 'not listed')
    t.equal((await app.inject({ url: `/webhooks/${doomed.id}/deliveries` })).statusCode, 404, 'nor its deliveries')

    t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder('after-delete') })).statusCode, 201)
    // Pending (its receiver refuses): read through the index of pending chains, not past the history, which would hold this loop.
    const recorded = (endpointId: string) => db.count(`SELECT count(*) AS count FROM webhook_deliveries
      WHERE endpoint_id = $1 AND order_id = $2 AND status = 'pending'`, [endpointId, 'after-delete'])
    await waitFor(async () => await recorded(kept.id) === 1, 'the order completed and recorded for the endpoint kept', 30_000)
    t.equal(await recorded(doomed.id), 0, 'nothing recorded for the deleted one')

    // The purge table empties once no delivery is left; polled rarely, as counting blocks this loop too.
    await waitFor(async () => {
      await new Promise((resolve) => setTimeout(resolve, 200))
      return await purging(db) === 0
    }, 'its deliveries removed', 240_000)
    const purgeMs = performance.now() - purgeStarted
    delay.disable()
    t.equal(await left(db, doomed.id), 0, 'every delivery of it removed')
    t.equal(await left(db, kept.id), 1, 'the other endpoint keeps its own')
    const longest = delay.max / 1e6
    t.comment(`DELETE answered in ${took.toFixed(0)} ms; deliveries removed in ${purgeMs.toFixed(0)} ms; longest event-loop delay meanwhile ${longest.toFixed(0)} ms`)
    // SQLite's statements hold this process's loop: the removal goes in pieces, none of them long
    // beside the whole. A fixed bound (500 ms) failed once in CI beside three other test files (909 ms).
    if (kind === 'SQLite') t.ok(longest < purgeMs / 3, `the event loop was never held long: longest ${longest.toFixed(0)} ms of ${purgeMs.toFixed(0)}`)
  })

  t.test(`${kind}: a removal cut short by a stop is finished when a store opens the database again`, { skip }, async (t) => {
    const db = await rawDatabase(t, kind)
    const first = await db.open()
    const endpoint = { id: 'ep_doomed', url: 'http://127.0.0.1:9/x', events: ['Completed' as const], description: null, secret: 'whsec_c2VjcmV0' }
    await first.createEndpoint(endpoint, Date.now(), 100)
    await db.insertHistory(endpoint.id, 5000)
    t.equal(await first.deleteEndpoint(endpoint.id, Date.now()), true)
    await first.close()
    t.ok(await left(db, endpoint.id) >= 4000, 'stopped after at most the batch under way')

    const second = await db.open()
    t.teardown(() => second.close())
    await waitFor(async () => await purging(db) === 0, 'the removal to be finished')
    t.equal(await left(db, endpoint.id), 0)
  })
}

t.test('PostgreSQL: a delete and a failing settle of its endpoint take their locks in one order, so they cannot deadlock', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const store = await openPgStore(database.url)
  t.teardown(() => store.close())
  const endpoint = { id: 'ep_busy', url: 'http://127.0.0.1:9/x', events: ['Completed' as const], description: null, secret: 'whsec_c2VjcmV0' }
  await store.createEndpoint(endpoint, Date.now(), 100)
  await store.queueDelivery({ id: 'msg_t', endpoint_id: endpoint.id, order_id: null, event_type: 'webhook.test', payload: '{}', created_at: Date.now() }, Date.now())
  const [claim] = await store.claimDeliveries(1, Date.now(), 30_000)

  // A third session holds the endpoint's row, so that both line up behind it: the delete first,
  // then the settle, which has updated its delivery before it waits to record the endpoint's error.
  const blocker = new pg.Client({ connectionString: database.url })
  await blocker.connect()
  t.teardown(() => blocker.end())
  const waiting = async () => Number((await blocker.query(`SELECT count(*) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n)
  await blocker.query('BEGIN')
  await blocker.query('SELECT id FROM webhook_endpoints WHERE id = $1 FOR UPDATE', [endpoint.id])
  const deleting = store.deleteEndpoint(endpoint.id, Date.now())
  await waitFor(async () => await waiting() === 1, 'the delete to wait for the endpoint row')
  const settling = store.settleDeliveries([{ claim: claim!, kind: 'failed', error: 'HTTP 500', statusCode: 500 }], Date.now())
  await waitFor(async () => await waiting() === 2, 'the settle to wait for the endpoint row, its delivery updated')
  await blocker.query('COMMIT')

  const outcomes = await Promise.allSettled([deleting, settling])
  t.same(outcomes.map((o) => o.status === 'rejected' ? String(o.reason) : 'ok'), ['ok', 'ok'], 'neither was chosen as a deadlock victim')
  t.equal(await store.endpoint(endpoint.id), undefined)
  await waitFor(async () => (await store.deliveries(endpoint.id, { status: 'failed', limit: 10 })).deliveries.length === 0, 'its delivery removed')
})
