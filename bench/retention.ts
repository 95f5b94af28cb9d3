import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { Sweeper } from '../src/sweeper.ts'

/*
 * Retention on the embedded store (`npx tsx bench/retention.ts`): four rounds of 100,000 orders
 * created (5,000 a transaction, as populate does), all completed (claims of 1,000), then a few
 * seconds' wait; the store's bytes on disk after each round, and the orders/s of each round's
 * create-and-complete, with ORDER_RETENTION=2s (the sweeper running throughout) and off.
 */
const ROUNDS = 4
const ORDERS = 100_000
const CREATE_CHUNK = 5000
const CLAIM = 1000
const WAIT_MS = 3000

async function run (retentionMs: number | null): Promise<Array<{ bytes: number, perSecond: number }>> {
  const dir = mkdtempSync(join(tmpdir(), 'retention-bench-'))
  const store = new SqliteStore(join(dir, 'orders.db'))
  const sweeper = new Sweeper(store, {
    retention: { orders: retentionMs, failedOrders: retentionMs, deliveries: null },
    onError: (err) => { console.error(err) }
  })
  sweeper.start()
  const rounds: Array<{ bytes: number, perSecond: number }> = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const started = performance.now()
      for (let i = 0; i < ORDERS; i += CREATE_CHUNK) {
        const orders = Array.from({ length: CREATE_CHUNK }, (_, j) => ({
          order_id: `r${round}-${i + j}`, user_id: (i + j) % 1000, item_ids: [1, 2, 3], total_amount: 10
        }))
        await store.createMany(orders, Date.now(), Date.now())
      }
      for (;;) {
        const claims = await store.claim(CLAIM, Date.now(), 30_000)
        if (claims.length === 0) break
        await store.settle(claims.map((claim) => ({ claim, ok: true as const })), Date.now())
      }
      const perSecond = ORDERS / ((performance.now() - started) / 1000)
      await sleep(WAIT_MS)
      // Past the retention and one sweep interval more: what a steady flow leaves on disk.
      if (retentionMs !== null) while ((await store.stats()).counts.Completed > 0) await sleep(100)
      rounds.push({ bytes: await store.diskBytes(), perSecond })
      console.log(`retention ${retentionMs === null ? 'off' : `${retentionMs} ms`}, round ${round + 1}: ${rounds.at(-1)!.bytes.toLocaleString('en')} bytes, ${Math.round(perSecond).toLocaleString('en')} orders/s`)
    }
  } finally {
    await sweeper.stop()
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
  return rounds
}

const on = await run(2000)
const off = await run(null)
const mean = (rounds: Array<{ perSecond: number }>) => rounds.reduce((sum, r) => sum + r.perSecond, 0) / rounds.length
console.log(`round 4 / round 1 on disk with retention: ${((on.at(-1)!.bytes) / on[0]!.bytes).toFixed(2)}x`)
console.log(`throughput with retention / without: ${(mean(on) / mean(off)).toFixed(3)} (${Math.round(mean(on))} against ${Math.round(mean(off))} orders/s)`)
