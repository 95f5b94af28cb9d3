import { rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, tempDir } from './helper.ts'
import { fillUp, SKIP_UNLESS_ROOT, smallDisk } from './support/small-disk.ts'
import { recount, storeContract } from './support/store-contract.ts'

t.test('SQLite store in memory', async (t) => {
  storeContract(t, async () => new SqliteStore(':memory:'))
})

t.test('SQLite store keeps orders and aggregates in its file across reopening', async (t) => {
  const path = join(tempDir(t), 'nested', 'orders.db')
  const first = new SqliteStore(path)
  await first.create(anOrder('kept'), 1000, 1000)
  await first.close()
  const second = new SqliteStore(path)
  t.teardown(() => second.close())
  t.equal((await second.get('kept'))?.status, 'Pending')
  t.equal((await second.stats()).counts.Pending, 1, 'migrations ran once; the stats rows were not reset')
})

t.test('a write that makes SQLite roll back the whole transaction fails its whole batch; the aggregates stay true', { skip: SKIP_UNLESS_ROOT }, async (t) => {
  const dir = smallDisk(t)
  const store = new SqliteStore(join(dir, 'orders.db'))
  t.teardown(() => store.close())
  await store.create(anOrder('existing'), 1, 1)
  fillUp(join(dir, 'filler'))
  // One batch: a create; a bulk create that spills the page cache to the full disk mid-statement, so
  // SQLite rolls back the whole transaction; then a cancel, which needs no new room on the disk.
  const bulk = Array.from({ length: 30_000 }, (_, i) => anOrder(`bulk-${i}`, { item_ids: Array.from({ length: 40 }, (_, k) => k) }))
  const outcomes = await Promise.allSettled([
    store.create(anOrder('before'), 1, 1), store.createMany(bulk, 1, 1), store.cancel('existing', 2)
  ])
  for (const outcome of outcomes) t.match(outcome, { status: 'rejected', reason: { code: 'SQLITE_FULL' } }, 'every write of the batch failed, with the cause')

  rmSync(join(dir, 'filler'))
  t.equal(await store.get('before'), undefined, 'rolled back: not kept')
  t.equal((await store.get('existing'))?.status, 'Pending', 'the cancel was not committed on its own, outside the transaction')
  t.same(await store.stats(), await recount(store), 'aggregates match the rows')
  t.equal(await store.create(anOrder('before'), 2, 2), 'created', 'a retry succeeds')
})
