import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import { SAME_STOP_REQUEST_MS } from '../src/stop-signals.ts'
import type { OrderStore } from '../src/store/order-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, POSTGRES_URL, SKIP_POSTGRES } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'

// Real processes, many rounds: longer than tap's 30 s for a file.
t.setTimeout(600_000)

/** What a stop may and may not leave behind, counted in the database itself. */
interface Census { pending: number, processing: number, completed: number, failed: number, pendingAttempted: number, completedRetried: number }

const CENSUS_SQL = `SELECT
  CAST(count(*) FILTER (WHERE status = 'Pending') AS INTEGER) AS pending,
  CAST(count(*) FILTER (WHERE status = 'Processing') AS INTEGER) AS processing,
  CAST(count(*) FILTER (WHERE status = 'Completed') AS INTEGER) AS completed,
  CAST(count(*) FILTER (WHERE status = 'Failed') AS INTEGER) AS failed,
  CAST(count(*) FILTER (WHERE status = 'Pending' AND attempts > 0) AS INTEGER) AS "pendingAttempted",
  CAST(count(*) FILTER (WHERE status = 'Completed' AND attempts <> 1) AS INTEGER) AS "completedRetried"
  FROM orders`

/** Counts orders in a SQLite file or a PostgreSQL database (by URL) that no process uses any more. */
async function census (database: string): Promise<Census> {
  if (database.startsWith('postgres')) {
    const client = new pg.Client({ connectionString: database })
    await client.connect()
    try {
      return (await client.query<Census>(CENSUS_SQL)).rows[0] as Census
    } finally {
      await client.end()
    }
  }
  const db = new Database(database, { readonly: true })
  try {
    return db.prepare(CENSUS_SQL).get() as Census
  } finally {
    db.close()
  }
}

/** Nothing Processing, nothing Failed, and no attempt counted for an order that was handed back. */
function handedBackCleanly (t: Test, counted: Census, what: string): void {
  t.match(counted, { processing: 0, failed: 0, pendingAttempted: 0, completedRetried: 0 }, what)
}

/** A backlog written straight to the store, to be processed by the processes under test. */
async function backlog (store: OrderStore, total: number): Promise<void> {
  const now = Date.now()
  for (let i = 0; i < total; i += 5000) {
    await store.createMany(Array.from({ length: Math.min(5000, total - i) }, (_, k) => anOrder(`backlog-${i + k}`)), now, now)
  }
}

// Orders that take long enough to be in flight at the signal; a grace period shorter than some of
// them, so that some finish and the rest are handed back. One attempt only: an order whose lease
// ran out instead of being handed back would end Failed.
const IN_FLIGHT = { PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '50-600', SHUTDOWN_GRACE_MS: '200', MAX_ATTEMPTS: '1', LOG_LEVEL: 'info' }

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  t.test(`${signal} to the process group of \`npm start\` (SQLite): one graceful shutdown, exit 0`, async (t) => {
    const path = join(tempDir(t), 'orders.db')
    const server = await ServerProcess.startWithNpm({ ...IN_FLIGHT, DATABASE_URL: `sqlite:${path}` })
    t.teardown(() => server.killGroup())
    t.equal((await server.request('/orders/populate', { total_entries: 500 })).status, 201)
    await waitFor(async () => (await server.request('/orders/metrics')).json.processing.count > 0, 'orders in flight')
    server.signalGroup(signal)
    t.equal(await server.exited, 0, 'npm start exits 0')
    await server.groupGone()
    t.match(server.output, `"signal":"${signal}","msg":"shutting down"`, 'the graceful shutdown is logged')
    t.notMatch(server.output, /second SIG|exiting/, 'the copies of the signal did not force an exit')
    const counted = await census(path)
    handedBackCleanly(t, counted, 'every order in flight was finished or handed back')
    t.equal(counted.pending + counted.completed, 500)
  })

  t.test(`${signal} to the process group of \`npm run worker\` (PostgreSQL): one graceful shutdown, exit 0`, { skip: SKIP_POSTGRES }, async (t) => {
    const database = await createDatabase()
    t.teardown(() => database.drop())
    const store = await openPgStore(database.url)
    t.teardown(() => store.close())
    await backlog(store, 500)
    const worker = await ServerProcess.startWorker({ ...IN_FLIGHT, DATABASE_URL: database.url }, { viaNpm: true })
    t.teardown(() => worker.killGroup())
    await waitFor(async () => (await store.stats()).counts.Processing > 0, 'orders in flight')
    worker.signalGroup(signal)
    t.equal(await worker.exited, 0, 'npm run worker exits 0')
    await worker.groupGone()
    t.match(worker.output, `"signal":"${signal}","msg":"shutting down"`, 'the graceful shutdown is logged')
    t.notMatch(worker.output, /second SIG|exiting/, 'the copies of the signal did not force an exit')
    const counted = await census(database.url)
    handedBackCleanly(t, counted, 'every order in flight was finished or handed back')
    t.equal(counted.pending + counted.completed, 500)
  })
}

t.test('a second signal sent deliberately later forces the exit at once', async (t) => {
  const path = join(tempDir(t), 'orders.db')
  // The graceful shutdown would wait for the orders' 20 s of work.
  const server = await ServerProcess.startWithNpm({ ...IN_FLIGHT, PROCESSING_TIME_MS: '20000', SHUTDOWN_GRACE_MS: '60000', DATABASE_URL: `sqlite:${path}` })
  t.teardown(() => server.killGroup())
  await server.request('/orders/populate', { total_entries: 10 })
  await waitFor(async () => (await server.request('/orders/metrics')).json.processing.count === 10, 'orders in flight')
  server.signalGroup('SIGINT')
  await waitFor(() => server.output.includes('"msg":"shutting down"'), 'the shutdown to begin')
  // What is being tested is the wait itself: a person pressing Ctrl-C again, later.
  await sleep(SAME_STOP_REQUEST_MS + 500)
  t.equal(server.child.exitCode, null, 'still shutting down gracefully')
  server.signalGroup('SIGINT')
  t.equal(await server.exited, 1, 'exits at once, not 0')
  await server.groupGone()
  t.match(server.output, 'second SIGINT, exiting')
  t.equal((await census(path)).processing, 10, 'the orders were left to their leases')
})

/**
 * Stops a process with SIGTERM while it works through a backlog, round after round, each time at
 * some point of its claim-run-settle cycle: a claim under way must be handed back too.
 */
async function stopRounds (t: Test, database: string, rounds: number, start: () => Promise<ServerProcess>): Promise<void> {
  let completed = (await census(database)).completed
  for (let round = 1; round <= rounds; round++) {
    const proc = await start()
    t.teardown(() => { proc.child.kill('SIGKILL') })
    await waitFor(async () => (await census(database)).completed > completed, `round ${round}: orders to be completed`, 30_000)
    t.equal(await proc.stop('SIGTERM'), 0, `round ${round}: exit 0`)
    const counted = await census(database)
    handedBackCleanly(t, counted, `round ${round}: every claim was settled or handed back`)
    t.ok(counted.pending > 0, `round ${round}: stopped with a backlog left (${counted.pending})`)
    completed = counted.completed
  }
}

t.test('a PostgreSQL worker stopped under a large backlog hands back every claim, round after round', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const store = await openPgStore(database.url)
  await backlog(store, 150_000)
  await store.close()
  const env = { DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0' }
  await stopRounds(t, database.url, 12, () => ServerProcess.startWorker(env))
})

t.test('the SQLite server stopped under a large backlog hands back every claim, round after round', async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const store = new SqliteStore(path)
  await backlog(store, 100_000)
  await store.close()
  const env = { DATABASE_URL: `sqlite:${path}`, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0' }
  await stopRounds(t, path, 6, () => ServerProcess.start(env))
})

t.test('a worker that cannot hand its claims back exits non-zero and says so in one line', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const name = new URL(database.url).pathname.slice(1)
  const admin = new pg.Client({ connectionString: POSTGRES_URL })
  await admin.connect()
  t.teardown(() => admin.end())
  const store = await openPgStore(database.url)
  await backlog(store, 100)
  await store.close()
  const worker = await ServerProcess.startWorker({
    DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '20000', SHUTDOWN_GRACE_MS: '0'
  })
  t.teardown(() => { worker.child.kill('SIGKILL') })
  // Claimed, and then every session of the worker idle: the claim's answer has been sent to it.
  await waitFor(async () => {
    if ((await census(database.url)).processing !== 100) return false
    const { rows } = await admin.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle'", [name])
    return rows.length === 0
  }, 'the orders to be claimed')
  // The database turns read-only, as a standby after a failover: the worker's sessions are ended.
  await admin.query(`ALTER DATABASE ${name} SET default_transaction_read_only = on`)
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name])
  t.equal(await worker.stop('SIGTERM'), 1, 'exit code 1')
  const lines = worker.output.split('\n').filter((line) => line.includes('could not hand back'))
  t.equal(lines.length, 1, 'one line says so')
  t.match(lines[0], 'could not hand back 100 claimed orders')
  t.equal((await census(database.url)).processing, 100, 'the orders wait for their leases to end')
})
