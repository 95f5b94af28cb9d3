import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
const alt = process.env.ALT ?? 'keep'
const OR = "CREATE INDEX orders_finished ON orders (status, updated_at) WHERE status = 'Completed' OR status = 'Cancelled' OR status = 'Failed'"
const THREE = ['Completed', 'Cancelled', 'Failed'].map((s) => `CREATE INDEX orders_${s} ON orders (updated_at) WHERE status = '${s}';`).join('\n')
const dir = mkdtempSync(join(tmpdir(), 'exp-'))
const store = new SqliteStore(join(dir, 'orders.db'))
const db = (store as any).db
if (alt !== 'keep' && alt !== 'new') db.exec('DROP INDEX orders_finished')
if (alt === 'or') db.exec(OR)
if (alt === 'three') db.exec(THREE)
const N = Number(process.env.N ?? 20000)
for (let i = 0; i < N; i += 5000) {
  const orders = Array.from({ length: 5000 }, (_, j) => ({ order_id: `o-${i + j}`, user_id: (i + j) % 1000, item_ids: [1, 2, 3], total_amount: 10 }))
  await store.createMany(orders, Date.now(), Date.now())
}
for (;;) {
  const claims = await store.claim(1000, Date.now(), 30_000, true)
  if (claims.length === 0) break
  await store.settle(claims.map((claim) => ({ claim, ok: true as const })), Date.now())
}
await store.close()
rmSync(dir, { recursive: true, force: true })
