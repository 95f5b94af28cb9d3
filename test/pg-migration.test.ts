import pg from 'pg'
import t from 'tap'
import type { Claim } from '../src/store/order-store.ts'
import { anOrder } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES } from './support/pg-database.ts'

const T0 = 1_700_000_000_000
const LEASE = 60_000

/** The statuses of all orders counted in the table, as the aggregates should have them. */
async function recount (url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const { rows } = await client.query<{ status: string, n: number }>('SELECT status, count(*)::int AS n FROM orders GROUP BY status')
    return Object.fromEntries(rows.map(({ status, n }) => [status, n]))
  } finally {
    await client.end()
  }
}

async function sql (url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await client.query(text)
  } finally {
    await client.end()
  }
}

t.test('PostgreSQL: a database of the schema before the orders table left room for updates and lost orders_by_user is migrated in place, every order kept, and the service works on it', { skip: SKIP_POSTGRES }, async (t) => {
  const { url, drop } = await createDatabase()
  t.teardown(drop)
  // Orders in every state, written by the store (claims go oldest first); then the database taken
  // back to the schema before migrations 15 and 16 (the table option, the index, their version
  // rows), as a database of an earlier release is.
  const ids = ['completed', 'failed', 'processing', 'pending', 'cancelled']
  const before = await openPgStore(url)
  for (const id of ids) await before.create(anOrder(id), T0, T0)
  await before.cancel('cancelled', T0 + 1)
  const [done, broken] = await before.claim(2, T0 + 2, LEASE)
  await before.settle([
    { claim: done!, ok: true, result: '{"ok":1}' },
    { claim: broken!, ok: false, error: 'broken', retryAt: null }
  ], T0 + 3)
  const [live] = await before.claim(1, T0 + 4, LEASE) as [Claim]
  const orders = await Promise.all(ids.map((id) => before.get(id)))
  const stats = await before.stats()
  await before.close()
  await sql(url, `ALTER TABLE orders RESET (fillfactor); CREATE INDEX orders_by_user ON orders (user_id, seq);
    DELETE FROM schema_migrations WHERE version IN (15, 16)`)
  t.same((await sql(url, "SELECT reloptions FROM pg_class WHERE relname = 'orders'")).rows[0].reloptions, null, 'the old schema: no fillfactor')
  const userIndex = "SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'orders_by_user'"
  t.equal((await sql(url, userIndex)).rows[0].n, 1, 'the old schema: orders_by_user')

  const store = await openPgStore(url)
  t.teardown(() => store.close())
  t.same((await sql(url, "SELECT reloptions FROM pg_class WHERE relname = 'orders'")).rows[0].reloptions, ['fillfactor=50'], 'migrated')
  t.equal((await sql(url, userIndex)).rows[0].n, 0, 'migrated: no orders_by_user')
  t.same((await store.list({ userId: 1, limit: 10 })).orders, orders.toSorted((a, b) => a!.seq - b!.seq), "the customer's orders, every status, in order")
  t.same(await Promise.all(ids.map((id) => store.get(id))), orders, 'every order as it was')
  t.same(await store.stats(), stats, 'the aggregates as they were')
  t.same(orders.map((o) => o!.status), ['Completed', 'Failed', 'Processing', 'Pending', 'Cancelled'], 'an order in every state')

  // The claim made before the migration is still the order's: its settle is recorded.
  t.equal(await store.settle([{ claim: live, ok: true }], T0 + 5), 1, 'the live claim settles')
  t.equal(await store.create(anOrder('new'), T0 + 6, T0 + 6), 'created')
  const claimed = await store.claim(10, T0 + 7, LEASE)
  t.same(claimed.map((c) => c.order_id).sort(), ['new', 'pending'], 'the Pending orders, old and new, are claimed')
  t.equal(await store.settle(claimed.map((claim) => ({ claim, ok: true })), T0 + 8), 2)
  t.match(await store.get('processing'), { status: 'Completed', attempts: 1, processing_started_at: T0 + 4, completed_at: T0 + 5 })
  t.match(await store.get('pending'), { status: 'Completed', attempts: 1, processing_started_at: T0 + 7, completed_at: T0 + 8 })
  const counts = (await store.stats()).counts
  t.same(Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0)), await recount(url), 'the aggregates are the recount')
  t.match(counts, { Completed: 4, Failed: 1, Cancelled: 1, Pending: 0, Processing: 0 })
  // An erasure reads the customer's finished orders through the index that is left.
  await store.requestErasure(1, T0 + 9)
  t.equal(await store.deleteUserOrders(1, 1000), 6, 'the customer erased')
  t.same((await store.list({ userId: 1, limit: 10 })).orders, [], 'none of their orders left')
})

t.test('PostgreSQL: a database whose orders_by_user an operator dropped by hand before migration 16 ran is migrated all the same', { skip: SKIP_POSTGRES }, async (t) => {
  const { url, drop } = await createDatabase()
  t.teardown(drop)
  await (await openPgStore(url)).close()
  await sql(url, 'DELETE FROM schema_migrations WHERE version = 16')
  const store = await openPgStore(url)
  t.teardown(() => store.close())
  t.equal(await store.create(anOrder('after'), T0, T0), 'created')
  t.equal((await sql(url, 'SELECT MAX(version)::int AS v FROM schema_migrations')).rows[0].v, 16, 'migration 16 recorded')
})
