import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { openStore } from '../src/store/open-store.ts'
import type { Retention } from '../src/config.ts'
import { anOrder, tempDir } from './helper.ts'
import { fillUp, SKIP_UNLESS_ROOT, smallDisk } from './support/small-disk.ts'
import { recount, storeContract } from './support/store-contract.ts'
import { anEndpoint, webhookStoreContract } from './support/webhook-store-contract.ts'
import { lifecycleContract } from './support/lifecycle-contract.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

/** Whether the SQLite file at `path` has the index `name`, read on a connection of its own. */
function hasIndex (path: string, name: string): boolean {
  const db = new Database(path, { readonly: true })
  try {
    return db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?").pluck().get(name) === 1
  } finally {
    db.close()
  }
}

t.test('SQLite store in memory', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  storeContract(t, async () => new SqliteStore(':memory:'))
})

t.test('SQLite store: retention and erasure', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  lifecycleContract(t, async () => new SqliteStore(':memory:'))
})

t.test('SQLite store: webhooks', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  webhookStoreContract(t, async () => new SqliteStore(':memory:'))
})

t.test("retention's index of finished orders is kept only while a retention of orders needs it", { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const open = (retention: Partial<Retention>) => openStore({
    DATABASE_URL: `sqlite:${path}`,
    DATABASE_TIMEOUT_MS: 1000,
    SQLITE_BUSY_TIMEOUT_MS: 1000,
    retention: { orders: null, failedOrders: null, deliveries: null, ...retention }
  }, { warn () {}, info () {} })
  const indexed = () => hasIndex(path, 'orders_finished')

  let store = await open({})
  t.notOk(indexed(), 'retention off: no orders_finished, so finishing an order writes no entry to it')
  await store.close()

  store = await open({ orders: 2000 })
  t.ok(indexed(), 'ORDER_RETENTION on: built')
  await store.create(anOrder('swept'), 1000, 1000)
  const claims = await store.claim(1, 1000, 30_000)
  await store.settle(claims.map((claim) => ({ claim, ok: true as const })), 2000)
  t.equal(await store.sweepOrders('Completed', 5000, 10), 1, 'and the sweep deletes through it')
  await store.close()

  store = await open({ failedOrders: 2000 })
  t.ok(indexed(), 'only FAILED_ORDER_RETENTION on: kept')
  await store.close()

  store = await open({})
  t.teardown(() => store.close())
  t.notOk(indexed(), 'retention off again: dropped')
  await t.rejects(store.sweepOrders('Completed', 5000, 10), /no such index: orders_finished/, 'a sweep without it fails loudly')
})

t.test('SQLite store keeps orders and aggregates in its file across reopening', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'nested', 'orders.db')
  const first = new SqliteStore(path)
  await first.create(anOrder('kept'), 1000, 1000)
  await first.close()
  const second = new SqliteStore(path)
  t.teardown(() => second.close())
  t.equal((await second.get('kept'))?.status, 'Pending')
  t.equal((await second.stats()).counts.Pending, 1, 'migrations ran once; the stats rows were not reset')
})

t.test('a SQLite file of the schema before orders_by_user was dropped is migrated in place: every order kept, listed and erased by customer', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const ids = ['completed', 'failed', 'processing', 'pending', 'cancelled']
  const before = new SqliteStore(path)
  for (const id of ids) await before.create(anOrder(id), 1000, 1000)
  await before.cancel('cancelled', 1001)
  const [done, broken] = await before.claim(2, 1002, 60_000)
  await before.settle([{ claim: done!, ok: true }, { claim: broken!, ok: false, error: 'broken', retryAt: null }], 1003)
  await before.claim(1, 1004, 60_000)
  const orders = await Promise.all(ids.map((id) => before.get(id)))
  await before.close()
  // Back to the schema before migration 17: the index, and no version row for its drop.
  const old = new Database(path)
  old.exec('CREATE INDEX orders_by_user ON orders (user_id, seq); DELETE FROM schema_migrations WHERE version = 17')
  old.close()
  const indexed = () => hasIndex(path, 'orders_by_user')
  t.ok(indexed(), 'the old schema: orders_by_user')
  const store = new SqliteStore(path)
  t.teardown(() => store.close())
  t.notOk(indexed(), 'migrated: no orders_by_user')
  t.same(await Promise.all(ids.map((id) => store.get(id))), orders, 'every order as it was')
  t.same((await store.list({ userId: 1, limit: 10 })).orders, orders.toSorted((a, b) => a!.seq - b!.seq), "the customer's orders, every status, in order")
  t.same((await store.list({ userId: 1, limit: 10, order: 'desc', after: orders[3]!.seq })).orders.map((o) => o.order_id), ['processing', 'failed', 'completed'], 'newest first from a cursor')
  await store.requestErasure(1, 1005)
  t.equal(await store.deleteUserOrders(1, 1000), 3, 'the finished ones erased')
  t.same((await store.list({ userId: 1, limit: 10 })).orders.map((o) => o.order_id), ['processing', 'pending'], 'the unfinished ones left')

  // A file whose index an operator dropped by hand before the migration ran opens as well.
  const byHand = join(tempDir(t), 'by-hand.db')
  await new SqliteStore(byHand).close()
  const db = new Database(byHand)
  db.exec('DELETE FROM schema_migrations WHERE version = 17')
  db.close()
  const reopened = new SqliteStore(byHand)
  t.equal(await reopened.create(anOrder('after'), 1006, 1006), 'created', 'the index dropped by hand: migrated all the same')
  await reopened.close()
})

/** Index b-tree pages (interior 2, leaf 10): only their keys, never a row. */
const INDEX_PAGES = new Set([2, 10])

/**
 * Where `text` occurs in a SQLite file of `pageSize` pages, each as its page's type (the first byte
 * of its b-tree header, 0 on a zeroed page) and whether it lies in the page's unallocated space
 * (between the cell pointers and the cells: nothing the page holds).
 */
function occurrences (file: Buffer, pageSize: number, text: string): Array<{ type: number, unallocated: boolean }> {
  const found: Array<{ type: number, unallocated: boolean }> = []
  for (let at = file.indexOf(text); at >= 0; at = file.indexOf(text, at + 1)) {
    const page = Math.floor(at / pageSize) * pageSize
    const header = page === 0 ? 100 : 0
    const type = file[page + header] as number
    const pointersEnd = header + (type === 2 || type === 5 ? 12 : 8) + 2 * file.readUInt16BE(page + header + 3)
    const cellsStart = file.readUInt16BE(page + header + 5) || 65536
    found.push({ type, unallocated: at - page >= pointersEnd && at - page + text.length <= cellsStart })
  }
  return found
}

t.test("an erasure leaves none of the customer's rows or deliveries in the SQLite file, not even on free pages", { skip: SKIP_SQLITE_ONLY }, async (t) => {
  // Deleted rows stayed readable in the file: in the space the pages kept freed, on the pages
  // freed, and as the older versions an update (a claim, a settle) left: 18,384 copies of the ids
  // of the 3,000 orders erased here, 10,068 of them in table pages, rows around them; now 11.
  const path = join(tempDir(t), 'orders.db')
  const store = new SqliteStore(path)
  await store.createEndpoint(anEndpoint(['Completed']), Date.now(), 10)
  const now = Date.now()
  const orders = (prefix: string, userId: number) => Array.from({ length: 1000 }, (_, i) => anOrder(`${prefix}-${i}`, { user_id: userId }))
  for (const [prefix, userId] of [['kept', 1], ['erased-a', 7], ['erased-b', 7], ['erased-one', 1], ['kept-later', 1]] as const) {
    await store.createMany(orders(prefix, userId), now, now)
  }
  for (let claims = await store.claim(1000, now, 30_000); claims.length > 0; claims = await store.claim(1000, now, 30_000)) {
    await store.settle(claims.map((claim) => ({ claim, ok: true as const })), now)
  }
  await store.requestErasure(7, now)
  while (await store.deleteUserOrders(7, 1000) === 1000);
  const erased = await Promise.all(Array.from({ length: 1000 }, async (_, i) => (await store.deleteOrder(`erased-one-${i}`)).deleted))
  t.ok(erased.every(Boolean), 'erased one by one too')
  await store.close()
  t.notOk(existsSync(`${path}-wal`), 'closed: everything is in the database file')
  const file = readFileSync(path)
  t.ok(occurrences(file, 8192, 'kept-later-999').some(({ type }) => type === 13), 'the orders kept are read in their table pages')
  const left = occurrences(file, 8192, 'erased-')
  t.same(left.filter(({ type, unallocated }) => !INDEX_PAGES.has(type) || !unallocated), [],
    'no copy of an erased id is left in a row, a delivery or a free page')
  // A page split writes an index page anew and leaves its old bytes in its unallocated space:
  // a few ids, no row, until the page fills again (VACUUM rewrites the file).
  t.ok(left.length <= 50, `${left.length} copies of ids in unused space of index pages`)
})

t.test('SQLite store keeps the processing state in its file across reopening', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const first = new SqliteStore(path)
  const paused = await first.setProcessingState('paused', () => 1000)
  await first.create(anOrder('waiting'), 1000, 1000)
  await first.close()
  const second = new SqliteStore(path)
  t.teardown(() => second.close())
  t.same(await second.processingState(), paused, 'still paused')
  t.same(await second.claim(10, 2000, 30_000), [], 'claiming nothing')
  await second.setProcessingState('running', () => 3000)
  t.equal((await second.claim(10, 3000, 30_000)).length, 1)
})

t.test('a write that makes SQLite roll back the whole transaction fails its whole batch; the aggregates stay true', { skip: SKIP_UNLESS_ROOT || SKIP_SQLITE_ONLY }, async (t) => {
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

t.test('a write that fails halfway leaves nothing of itself behind; the other writes of its batch commit', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  /** A store on a file, and a trigger another program adds to it that aborts one statement mid-way. */
  const storeRefusing = (t: Test, trigger: string) => {
    const path = join(tempDir(t), 'orders.db')
    const store = new SqliteStore(path)
    t.teardown(() => store.close())
    return {
      store,
      refuse: () => {
        const other = new Database(path)
        other.exec(`CREATE TRIGGER refuse ${trigger} BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END`)
        other.close()
      }
    }
  }
  const LEASE = 30_000

  for (const method of ['createMany', 'createEach'] as const) {
    t.test(method, async (t) => {
      const { store, refuse } = storeRefusing(t, "BEFORE INSERT ON orders WHEN NEW.order_id = 'm3'")
      await store.create(anOrder('existing'), 1, 1)
      refuse()
      // One batch: the bulk insert stops at its third order, after inserting one and finding one.
      const [alone, bulk, cancel] = await Promise.allSettled([
        store.create(anOrder('alone'), 2, 2),
        store[method](['m1', 'existing', 'm3', 'm4'].map((id) => anOrder(id)), 2, 2),
        store.cancel('existing', 2)
      ])
      t.match(bulk, { status: 'rejected', reason: { message: 'refused by a trigger' } })
      t.equal(await store.get('m1'), undefined, 'none of the bulk insert is kept')
      t.match(alone, { status: 'fulfilled', value: 'created' })
      t.match(cancel, { status: 'fulfilled', value: { cancelled: true } })
      t.same(await store.stats(), await recount(store), 'aggregates match the rows')
    })
  }

  t.test('retryFailed', async (t) => {
    const { store, refuse } = storeRefusing(t, "BEFORE UPDATE OF status ON orders WHEN NEW.status = 'Pending' AND NEW.order_id = 'B'")
    await store.createMany([anOrder('A'), anOrder('B')], 1, 1)
    const claims = await store.claim(2, 2, LEASE)
    await store.settle(claims.map((claim) => ({ claim, ok: false as const, error: 'x', retryAt: null })), 3)
    refuse()
    // One batch: the retry stops at B, after retrying A.
    const [alone, retried] = await Promise.allSettled([store.create(anOrder('alone'), 4, 4), store.retryFailed(10, 4)])
    t.match(retried, { status: 'rejected', reason: { message: 'refused by a trigger' } })
    t.match(await store.get('A'), { status: 'Failed', attempts: 1 }, 'A is still Failed')
    t.match(alone, { status: 'fulfilled', value: 'created' })
    t.same(await store.stats(), await recount(store), 'aggregates match the rows')
  })

  t.test('release', async (t) => {
    const { store, refuse } = storeRefusing(t, "BEFORE UPDATE OF status ON orders WHEN NEW.status = 'Pending' AND NEW.order_id = 'B'")
    for (const id of ['A', 'B', 'C']) await store.create(anOrder(id), 1, 1)
    const claims = await store.claim(3, 2, LEASE)
    refuse()
    // One batch: the hand-back stops at B, after handing back A.
    const [alone, released] = await Promise.allSettled([store.create(anOrder('alone'), 3, 3), store.release(claims, 3)])
    t.match(released, { status: 'rejected', reason: { message: 'refused by a trigger' } })
    t.match(await store.get('A'), { status: 'Processing', attempts: 1 }, 'A is still claimed')
    t.match(alone, { status: 'fulfilled', value: 'created' })
    t.same(await store.stats(), await recount(store), 'aggregates match the rows')
  })

  t.test('recoverExpired', async (t) => {
    const { store, refuse } = storeRefusing(t, "BEFORE UPDATE OF status ON orders WHEN NEW.status = 'Pending' AND NEW.order_id = 'B'")
    await store.create(anOrder('A'), 1, 1)
    await store.claim(1, 1, 1)
    await store.recoverExpired(3, 3, [])
    await store.create(anOrder('B'), 3, 3)
    await store.claim(2, 4, 1) // A on its second attempt, B on its first
    refuse()
    // One batch: recovery fails A (out of attempts), then stops at putting B back.
    const [alone, recovered] = await Promise.allSettled([store.create(anOrder('alone'), 6, 6), store.recoverExpired(6, 2, [])])
    t.match(recovered, { status: 'rejected', reason: { message: 'refused by a trigger' } })
    t.match(await store.get('A'), { status: 'Processing' }, 'A was not failed')
    t.match(alone, { status: 'fulfilled', value: 'created' })
    t.same(await store.stats(), await recount(store), 'aggregates match the rows')
  })
})
