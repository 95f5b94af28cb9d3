import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import { recount } from './support/store-contract.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import type { OrderStore } from '../src/store/order-store.ts'

/** Enough finished orders that sweeping them takes many batches (SWEEP_BATCH is 1,000). */
const FINISHED = 60_000
/** Orders no sweep may touch: Pending ones, and Failed ones under FAILED_ORDER_RETENTION=off. */
const WAITING = 50
/** An hour: the orders created with it stay Pending through the test, with the processor on. */
const LONG_DELAY = '3600000'

/** The database under test, and ways to read it without the service. */
interface Database_ {
  url: string
  /** Orders per status (of one customer, if given), counted by SQL on the database itself. */
  countByStatus: (userId?: number) => Promise<Record<string, number>>
  openStore: () => Promise<OrderStore>
}

async function countedRows (rows: Array<{ status: string, n: number | string }>): Promise<Record<string, number>> {
  return Object.fromEntries(rows.map((row) => [row.status, Number(row.n)]))
}

function sqliteDatabase (t: Test): Database_ {
  const file = join(tempDir(t), 'orders.db')
  return {
    url: `sqlite:${file}`,
    countByStatus: async (userId) => {
      const db = new Database(file, { readonly: true })
      try {
        return await countedRows(db.prepare('SELECT status, count(*) AS n FROM orders WHERE @userId IS NULL OR user_id = @userId GROUP BY status')
          .all({ userId: userId ?? null }) as Array<{ status: string, n: number }>)
      } finally {
        db.close()
      }
    },
    openStore: async () => new SqliteStore(file, 1000)
  }
}

async function pgDatabase (t: Test): Promise<Database_> {
  const { url, drop } = await createDatabase()
  t.teardown(drop)
  return {
    url,
    countByStatus: async (userId) => {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      try {
        return await countedRows((await client.query('SELECT status, count(*) AS n FROM orders WHERE $1::bigint IS NULL OR user_id = $1 GROUP BY status',
          [userId ?? null])).rows)
      } finally {
        await client.end()
      }
    },
    openStore: async () => openPgStore(url)
  }
}

async function start (t: Test, db: Database_, env: Record<string, string>): Promise<ServerProcess> {
  const server = await ServerProcess.start({
    DATABASE_URL: db.url,
    PROCESSING_TIME_MS: '0',
    PROCESSOR_CONCURRENCY: '2000',
    RETRY_BACKOFF_MS: '0',
    FAILED_ORDER_RETENTION: 'off',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...env
  }, 'dist/src/server.js')
  t.teardown(() => { server.child.kill('SIGKILL') })
  return server
}

const metrics = async (server: ServerProcess) => (await server.request('/orders/metrics')).json

async function deletedSoFar (server: ServerProcess, reason: 'retention' | 'erasure'): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  return Number(new RegExp(`^orders_deleted_total\\{reason="${reason}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
}

/** The counts of GET /orders/metrics as the database's own rows per status. */
function metricsCounts (m: Record<string, any>): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const status of ['Pending', 'Processing', 'Completed', 'Failed', 'Cancelled']) {
    const count = m[status.toLowerCase()].count as number
    if (count > 0) counts[status] = count
  }
  return counts
}

/** Checks, through a store of its own, that the aggregates behind the metrics equal a recount of the orders left. */
async function aggregatesAreARecount (t: Test, db: Database_): Promise<void> {
  const store = await db.openStore()
  try {
    t.same(await store.stats(), await recount(store), 'the aggregates equal a recount of the orders left')
  } finally {
    await store.close()
  }
}

async function killMidSweep (t: Test, db: Database_): Promise<void> {
  // Populating and processing 60,000 orders, then sweeping them, takes minutes on a loaded machine.
  t.setTimeout(600_000)
  // Finished orders: most Completed, some Failed (kept: FAILED_ORDER_RETENTION=off).
  const filler = await start(t, db, { PENDING_DELAY_MS: '0', FAILURE_RATE: '0.02', MAX_ATTEMPTS: '1', ORDER_RETENTION: 'off' })
  t.equal((await filler.request('/orders/populate', { total_entries: FINISHED, batch_id: 'old' })).status, 201)
  const finished = await waitFor(async () => {
    const m = await metrics(filler)
    return m.completed.count + m.failed.count === FINISHED && m
  }, 'every populated order to finish', 300_000)
  const failed: number = finished.failed.count
  t.ok(failed > 0, `${failed} Failed orders, kept by their own setting`)
  t.equal(await filler.stop('SIGTERM'), 0)

  // Orders that must stay: Pending for an hour.
  const shop = await start(t, db, { PENDING_DELAY_MS: LONG_DELAY, ORDER_RETENTION: 'off' })
  const waiting = Array.from({ length: WAITING }, (_, i) => `waiting-${i}`)
  const created = await Promise.all(waiting.map(async (id) => (await shop.request('/orders', anOrder(id))).status))
  t.same(created, waiting.map(() => 201))
  t.equal(await shop.stop('SIGTERM'), 0)

  // Retention on: the sweeper starts on the finished orders at once; killed as soon as it has
  // deleted some, so mid-sweep (each batch of 1,000 commits on its own).
  const sweeping = await start(t, db, { PENDING_DELAY_MS: LONG_DELAY, ORDER_RETENTION: '1s' })
  const seen = await waitFor(async () => {
    const swept = await deletedSoFar(sweeping, 'retention')
    return swept > 0 && swept
  }, 'the sweep to be under way', 60_000)
  t.equal(await sweeping.stop('SIGKILL'), null, 'killed, not exited')

  const afterKill = await db.countByStatus()
  const completedLeft = afterKill.Completed ?? 0
  t.ok(completedLeft > 0 && completedLeft <= FINISHED - failed - seen,
    `killed mid-sweep: ${FINISHED - failed - completedLeft} of ${FINISHED - failed} Completed orders deleted (at least ${seen} seen)`)
  t.equal((FINISHED - failed - completedLeft) % 1000, 0, 'whole batches of 1,000 were deleted, no part of one')
  t.same(afterKill, { Completed: completedLeft, Failed: failed, Pending: WAITING }, 'only Completed orders were deleted')
  await aggregatesAreARecount(t, db)

  // Restarted: metrics equal the rows from the start, and the sweep finishes.
  const restarted = await start(t, db, { PENDING_DELAY_MS: LONG_DELAY, ORDER_RETENTION: '1s' })
  const before = await metrics(restarted)
  const rowsBefore = await db.countByStatus()
  t.ok(before.completed.count >= (rowsBefore.Completed ?? 0), 'metrics read before the rows: at least as many Completed')
  await waitFor(async () => (await metrics(restarted)).completed.count === 0, 'the sweep to finish', 120_000)
  const done = await metrics(restarted)
  t.same(metricsCounts(done), await db.countByStatus(), 'GET /orders/metrics equals the rows counted in the database')
  t.same(metricsCounts(done), { Failed: failed, Pending: WAITING })
  t.equal(done.total_orders, failed + WAITING)
  const statuses = await Promise.all(waiting.map(async (id) => (await restarted.request(`/orders/${id}`)).json.status))
  t.same(statuses, waiting.map(() => 'Pending'), 'every Pending order is kept')
  t.equal(await restarted.stop('SIGTERM'), 0)
}

/** The customer whose orders are erased, and another, whose orders must stay. */
const CUSTOMER = 7
const OTHER = 8
const OTHERS_ORDERS = 100

/**
 * Through the store, in chunks of 1,000: FINISHED finished orders of CUSTOMER (every 20th Failed),
 * OTHERS_ORDERS Completed ones of OTHER, and WAITING of CUSTOMER Pending for an hour.
 */
async function fillForErasure (store: OrderStore): Promise<void> {
  const now = Date.now()
  const finish = async (orderIds: string[], userId: number) => {
    await store.createMany(orderIds.map((id) => anOrder(id, { user_id: userId })), now, now)
    const claims = await store.claim(orderIds.length, now, 60_000)
    await store.settle(claims.map((claim, i) => i % 20 === 0 && userId === CUSTOMER
      ? { claim, ok: false as const, error: 'x', retryAt: null }
      : { claim, ok: true as const }), now)
  }
  for (let i = 0; i < FINISHED; i += 1000) await finish(Array.from({ length: 1000 }, (_, j) => `erased-${i + j}`), CUSTOMER)
  await finish(Array.from({ length: OTHERS_ORDERS }, (_, j) => `kept-${j}`), OTHER)
  await store.createMany(Array.from({ length: WAITING }, (_, j) => anOrder(`waiting-${j}`, { user_id: CUSTOMER })), now, now + Number(LONG_DELAY))
}

async function killMidErasure (t: Test, db: Database_): Promise<void> {
  t.setTimeout(600_000)
  const filling = await db.openStore()
  try {
    await fillForErasure(filling)
  } finally {
    await filling.close()
  }
  const shop = await start(t, db, { PENDING_DELAY_MS: LONG_DELAY, ORDER_RETENTION: 'off' })
  t.equal((await fetch(`${shop.url}/orders?user_id=${CUSTOMER}`, { method: 'DELETE' })).status, 202)
  const seen = await waitFor(async () => {
    const erased = await deletedSoFar(shop, 'erasure')
    return erased > 0 && erased
  }, 'the erasure to be under way', 60_000)
  t.equal(await shop.stop('SIGKILL'), null, 'killed, not exited')

  const afterKill = await db.countByStatus(CUSTOMER)
  const left = (afterKill.Completed ?? 0) + (afterKill.Failed ?? 0)
  t.ok(left > 0 && left <= FINISHED - seen, `killed mid-erasure: ${FINISHED - left} of ${FINISHED} finished orders erased (at least ${seen} seen)`)
  t.equal((FINISHED - left) % 1000, 0, 'whole batches of 1,000 were erased, no part of one')
  t.equal(afterKill.Pending, WAITING, "the customer's Pending orders stay")
  await aggregatesAreARecount(t, db)

  // Restarted and not asked again: the erasure answered 202 is finished.
  const restarted = await start(t, db, { PENDING_DELAY_MS: LONG_DELAY, ORDER_RETENTION: 'off' })
  await waitFor(async () => {
    const counts = await db.countByStatus(CUSTOMER)
    return counts.Completed === undefined && counts.Failed === undefined
  }, 'the erasure to finish after the restart', 60_000)
  t.same(await db.countByStatus(CUSTOMER), { Pending: WAITING }, "only the customer's Pending orders are left")
  t.same(await db.countByStatus(OTHER), { Completed: OTHERS_ORDERS }, "another customer's orders stay")
  t.same(metricsCounts(await metrics(restarted)), await db.countByStatus(), 'GET /orders/metrics equals the rows counted in the database')
  t.equal(await restarted.stop('SIGTERM'), 0)
}

t.setTimeout(1_200_000)

t.test('SQLite: kill -9 mid-sweep loses no order that should stay, and the counts stay exact', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  await killMidSweep(t, sqliteDatabase(t))
})

t.test('PostgreSQL: kill -9 mid-sweep loses no order that should stay, and the counts stay exact', { skip: SKIP_POSTGRES }, async (t) => {
  await killMidSweep(t, await pgDatabase(t))
})

t.test('SQLite: an erasure cut short by kill -9 is finished after the restart, in whole batches, with exact counts', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  await killMidErasure(t, sqliteDatabase(t))
})

t.test('PostgreSQL: an erasure cut short by kill -9 is finished after the restart, in whole batches, with exact counts', { skip: SKIP_POSTGRES }, async (t) => {
  await killMidErasure(t, await pgDatabase(t))
})
