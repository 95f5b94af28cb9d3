import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { PgStore } from '../src/store/pg/pg-store.ts'
import type { OrderStore } from '../src/store/order-store.ts'
import { Sweeper } from '../src/sweeper.ts'
import { createDatabase } from '../test/support/pg-database.ts'

/*
 * Retention (`npx tsx bench/retention.ts [--postgres] [--repeats N] [--rounds N] [--retention-only]`): four rounds of 100,000 orders
 * created (5,000 a transaction, as populate does), all completed (claims of 1,000), then a few
 * seconds' wait; the store's bytes on disk after each round, and the orders/s of each round's
 * create-and-complete, with ORDER_RETENTION=2s (the sweeper running throughout) and off. The two
 * runs alternate (on, off, on, off) so that a change in the machine's load falls on both alike.
 * With --postgres each run has a database of its own on DATABASE_URL's server (or the local one),
 * whose bytes on disk are its tables' and indexes' (pg_total_relation_size): there what comes
 * back depends on autovacuum, so the server's setting is printed with the figures.
 */
const { values: args } = parseArgs({
  options: {
    postgres: { type: 'boolean', default: false },
    repeats: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '4' },
    // Only the runs with retention on: for watching the store's size over more rounds.
    'retention-only': { type: 'boolean', default: false }
  }
})
const POSTGRES_SERVER = process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : 'postgres://postgres@127.0.0.1:5432/postgres'

const ROUNDS = Number(args.rounds)
const ORDERS = 100_000
const CREATE_CHUNK = 5000
const CLAIM = 1000
const WAIT_MS = 3000

async function openStore (): Promise<{ store: OrderStore, remove: () => Promise<void> }> {
  if (args.postgres) {
    const database = await createDatabase(POSTGRES_SERVER)
    const store = await PgStore.open(database.url, { timeoutMs: 30_000, log: console })
    return { store, remove: database.drop }
  }
  const dir = mkdtempSync(join(tmpdir(), 'retention-bench-'))
  return { store: new SqliteStore(join(dir, 'orders.db')), remove: async () => { rmSync(dir, { recursive: true, force: true }) } }
}

async function run (retentionMs: number | null): Promise<Array<{ bytes: number, perSecond: number, cpuMs: number }>> {
  const { store, remove } = await openStore()
  const sweeper = new Sweeper(store, {
    retention: { orders: retentionMs, failedOrders: retentionMs, deliveries: null },
    onError: (err) => { console.error(err) }
  })
  sweeper.start()
  const rounds: Array<{ bytes: number, perSecond: number, cpuMs: number }> = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const started = performance.now()
      const cpu = process.cpuUsage()
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
      // The process's CPU for the round, its sweeps included: unlike orders/s, it hardly moves
      // with what else the machine is doing.
      const { user, system } = process.cpuUsage(cpu)
      rounds.push({ bytes: await store.diskBytes(), perSecond, cpuMs: (user + system) / 1000 / (ORDERS / 1000) })
      console.log(`retention ${retentionMs === null ? 'off' : `${retentionMs} ms`}, round ${round + 1}: ${rounds.at(-1)!.bytes.toLocaleString('en')} bytes, ${Math.round(perSecond).toLocaleString('en')} orders/s, ${rounds.at(-1)!.cpuMs.toFixed(1)} ms CPU per 1,000 orders`)
    }
  } finally {
    await sweeper.stop()
    await store.close()
    await remove()
  }
  return rounds
}

if (args.postgres) {
  const client = new pg.Client({ connectionString: POSTGRES_SERVER })
  await client.connect()
  console.log(`PostgreSQL: autovacuum ${(await client.query('SHOW autovacuum')).rows[0].autovacuum}`)
  await client.end()
}
type Rounds = Awaited<ReturnType<typeof run>>
const on: Rounds[] = []
const off: Rounds[] = []
for (let repeat = 0; repeat < Number(args.repeats); repeat++) {
  on.push(await run(2000))
  if (!args['retention-only']) off.push(await run(null))
}
const mean = (runs: Rounds[], figure: 'perSecond' | 'cpuMs') => {
  const rounds = runs.flat()
  return rounds.reduce((sum, r) => sum + r[figure], 0) / rounds.length
}
for (const rounds of on) console.log(`round ${ROUNDS} / round 1 on disk with retention: ${(rounds.at(-1)!.bytes / rounds[0]!.bytes).toFixed(2)}x`)
if (off.length > 0) console.log(`throughput with retention / without: ${(mean(on, 'perSecond') / mean(off, 'perSecond')).toFixed(3)} (${Math.round(mean(on, 'perSecond'))} against ${Math.round(mean(off, 'perSecond'))} orders/s)`)
if (off.length > 0) console.log(`CPU per 1,000 orders with retention / without: ${(mean(on, 'cpuMs') / mean(off, 'cpuMs')).toFixed(3)} (${mean(on, 'cpuMs').toFixed(1)} against ${mean(off, 'cpuMs').toFixed(1)} ms)`)
