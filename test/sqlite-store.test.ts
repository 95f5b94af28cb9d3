import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SqliteStore } from '../src/sqlite-store.ts'
import { anOrder } from './helper.ts'
import { storeContract } from './store-contract.ts'

t.test('SQLite store in memory', async (t) => {
  storeContract(t, async () => new SqliteStore(':memory:'))
})

t.test('SQLite store keeps orders and aggregates in its file across reopening', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'orders-')), 'nested', 'orders.db')
  const first = new SqliteStore(path)
  await first.create(anOrder('kept'), 1000, 1000)
  await first.close()
  const second = new SqliteStore(path)
  t.teardown(() => second.close())
  t.equal((await second.get('kept'))?.status, 'Pending')
  t.equal((await second.stats()).counts.Pending, 1, 'migrations ran once; the stats rows were not reset')
})
