import pg from 'pg'
import t from 'tap'
import { PgStore } from '../src/store/pg/pg-store.ts'
import { anOrder, waitFor } from './helper.ts'
import { createDatabase, SKIP_POSTGRES } from './support/pg-database.ts'
import { storeContract } from './support/store-contract.ts'

t.test('PostgreSQL store', { skip: SKIP_POSTGRES }, async (t) => {
  storeContract(t, async () => {
    const database = await createDatabase()
    const store = await PgStore.open(database.url)
    const close = store.close.bind(store)
    store.close = async () => { await close(); await database.drop() }
    return store
  })
})

t.test('leases are set and compared with the database clock, not the caller\'s', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const store = await PgStore.open(database.url)
  t.teardown(() => store.close())
  const client = new pg.Client({ connectionString: database.url })
  await client.connect()
  t.teardown(() => client.end())
  const HOUR = 3_600_000
  await store.createMany([anOrder('ahead'), anOrder('behind')], Date.now() - HOUR, Date.now() - HOUR)

  // A worker whose clock runs an hour ahead claims for 30 s: not over for one whose clock runs two hours ahead.
  const [ahead] = await store.claim(1, Date.now() + HOUR, 30_000)
  t.equal(ahead?.order_id, 'ahead')
  const { rows: [lease] } = await client.query<{ remaining: number }>(`SELECT (lease_until - extract(epoch FROM clock_timestamp()) * 1000)::float8 AS remaining
    FROM orders WHERE order_id = 'ahead'`)
  t.ok(lease!.remaining > 20_000 && lease!.remaining <= 30_000, `the lease ends 30 s after the database's now (${Math.round(lease!.remaining)} ms left)`)
  t.equal(await store.recoverExpired(Date.now() + 2 * HOUR, 3, []), 0, 'a caller whose clock runs ahead does not take over a live claim')

  // A short claim by a worker with a true clock ends for a worker whose clock runs an hour behind all the same.
  const [behind] = await store.claim(1, Date.now(), 50)
  t.equal(behind?.order_id, 'behind')
  const recovered = await waitFor(async () => {
    const count = await store.recoverExpired(Date.now() - HOUR, 3, [])
    return count > 0 && count
  }, 'the short lease to end by the database clock')
  t.equal(recovered, 1)
  t.match(await store.get('behind'), { status: 'Pending', last_error: 'lease expired' })
  t.match(await store.get('ahead'), { status: 'Processing' })
})
