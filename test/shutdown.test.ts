import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import { SAME_STOP_REQUEST_MS } from '../src/stop-signals.ts'
import type { OrderStore } from '../src/store/order-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, POSTGRES_URL, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'
import { WebhookReceiver } from './support/webhook-receiver.ts'

// Real processes, many rounds: longer than tap's 30 s for a file (CI's PostgreSQL pass on a 2-core machine 2x slower than the last: 406 s).
t.setTimeout(900_000)

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

/** The one row `sql` reads from a SQLite file or a PostgreSQL database (by URL) that no process uses any more. */
async function readRow<T> (database: string, sql: string): Promise<T> {
  if (database.startsWith('postgres')) {
    const client = new pg.Client({ connectionString: database })
    await client.connect()
    try {
      return (await client.query(sql)).rows[0] as T
    } finally {
      await client.end()
    }
  }
  const db = new Database(database, { readonly: true })
  try {
    return db.prepare(sql).get() as T
  } finally {
    db.close()
  }
}

async function census (database: string): Promise<Census> {
  return readRow<Census>(database, CENSUS_SQL)
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
  t.test(`${signal} to the process group of \`npm start\` (SQLite): one graceful shutdown, exit 0`, { skip: SKIP_SQLITE_ONLY }, async (t) => {
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

/** Webhook deliveries still leased, and deliveries whose attempt was counted, once no process runs. */
const DELIVERIES_SQL = `SELECT
  CAST(count(*) AS INTEGER) AS total,
  CAST(count(*) FILTER (WHERE lease_token IS NOT NULL) AS INTEGER) AS leased,
  CAST(count(*) FILTER (WHERE attempts > 0) AS INTEGER) AS attempted
  FROM webhook_deliveries`

/** A PROCESSOR_MODULE whose step takes `ms` and ignores its signal, as a step that cannot be interrupted does. */
function stepTaking (t: Test, ms: number): string {
  const path = join(tempDir(t), 'step.mjs')
  writeFileSync(path, `export default () => new Promise((resolve) => setTimeout(() => resolve({ done: true }), ${ms}))`)
  return path
}

/** A file (SQLite) or a database of its own (PostgreSQL) for `npm start`, as a DATABASE_URL. */
async function databaseFor (t: Test, store: 'SQLite' | 'PostgreSQL'): Promise<{ url: string, path: string }> {
  if (store === 'SQLite') {
    const path = join(tempDir(t), 'orders.db')
    return { url: `sqlite:${path}`, path }
  }
  const database = await createDatabase()
  t.teardown(() => database.drop())
  return { url: database.url, path: database.url }
}

const IN_FLIGHT_COUNT = 20

/** Starts `npm start`, runs `first`, creates IN_FLIGHT_COUNT orders and waits until every one is being processed. */
async function startWithOrdersInFlight (t: Test, env: Record<string, string>, first = async (_server: ServerProcess) => {}): Promise<ServerProcess> {
  const server = await ServerProcess.startWithNpm({ PENDING_DELAY_MS: '0', MAX_ATTEMPTS: '1', LOG_LEVEL: 'info', ...env })
  t.teardown(() => server.killGroup())
  await first(server)
  t.equal((await server.request('/orders/populate', { total_entries: IN_FLIGHT_COUNT })).status, 201)
  await waitFor(async () => (await server.request('/orders/metrics')).json.processing.count === IN_FLIGHT_COUNT, 'every order in flight')
  return server
}

/** SIGINT to the process group; resolves with the exit code and the seconds it took. */
async function interrupt (t: Test, server: ServerProcess): Promise<{ code: number | null, seconds: number }> {
  const signalledAt = performance.now()
  server.signalGroup('SIGINT')
  const code = await server.exited
  const seconds = (performance.now() - signalledAt) / 1000
  await server.groupGone()
  t.comment(`exit ${code} after ${seconds.toFixed(1)} s`)
  return { code, seconds }
}

for (const store of ['SQLite', 'PostgreSQL'] as const) {
  const skip = store === 'PostgreSQL' ? SKIP_POSTGRES : SKIP_SQLITE_ONLY

  t.test(`\`npm start\` (${store}) at the default grace: steps and webhook attempts still under way are cut and handed back uncounted, exit 0`, { skip }, async (t) => {
    const database = await databaseFor(t, store)
    // A receiver that never answers: its attempts are under way at the signal.
    const receiver = await WebhookReceiver.start(t)
    let answer = (): void => {}
    const held = new Promise<void>((resolve) => { answer = resolve })
    t.teardown(() => answer())
    receiver.behaviour = async (_request, reply) => { await held; return reply.code(204).send() }
    const server = await startWithOrdersInFlight(t, {
      DATABASE_URL: database.url, PROCESSOR_MODULE: stepTaking(t, 30_000), WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_TIMEOUT_MS: '60000'
    }, async (server) => { t.equal((await server.request('/webhooks', { url: receiver.url(), events: ['Pending', 'Processing'] })).status, 201) })
    await waitFor(() => receiver.received.length > 0, 'webhook attempts under way')
    const { code, seconds } = await interrupt(t, server)
    t.equal(code, 0, 'exit 0, not cut by a framework timeout')
    t.ok(seconds >= 10, 'the grace period (10 s) was given to the steps under way')
    t.notMatch(server.output, /did not start in time|killed by timeout/)
    const counted = await census(database.path)
    handedBackCleanly(t, counted, 'every order handed back, its attempt uncounted')
    t.equal(counted.pending, IN_FLIGHT_COUNT, 'each one Pending, to be processed again')
    const deliveries = await readRow<{ total: number, leased: number, attempted: number }>(database.path, DELIVERIES_SQL)
    t.ok(deliveries.total > 0, `deliveries were recorded (${deliveries.total})`)
    t.match(deliveries, { leased: 0, attempted: 0 }, 'every webhook attempt under way handed back, uncounted')
  })

  t.test(`\`npm start\` (${store}) with SHUTDOWN_GRACE_MS=20000: steps that end 10-20 s after the signal complete, exit 0`, { skip }, async (t) => {
    const database = await databaseFor(t, store)
    // 15 s from the claim: past Fastify's 10 s plugin timeout, within the grace.
    const server = await startWithOrdersInFlight(t, { DATABASE_URL: database.url, PROCESSOR_MODULE: stepTaking(t, 15_000), SHUTDOWN_GRACE_MS: '20000' })
    const { code, seconds } = await interrupt(t, server)
    t.equal(code, 0, 'exit 0')
    t.ok(seconds < 20, 'it did not wait for the whole grace period once every step had ended')
    t.match(await census(database.path), { completed: IN_FLIGHT_COUNT, processing: 0, pending: 0, failed: 0 }, 'every order completed')
  })
}

t.test('a step that timed out (its order settled) is not waited for at shutdown', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const server = await ServerProcess.start({
    DATABASE_URL: `sqlite:${path}`,
    PROCESSOR_MODULE: stepTaking(t, 60_000),
    ATTEMPT_TIMEOUT_MS: '500',
    PENDING_DELAY_MS: '0',
    MAX_ATTEMPTS: '1',
    SHUTDOWN_GRACE_MS: '60000'
  })
  t.teardown(() => { server.child.kill('SIGKILL') })
  await server.request('/orders/populate', { total_entries: 5 })
  await waitFor(async () => (await server.request('/orders/metrics')).json.failed.count === 5, 'every attempt to time out')
  const stoppedAt = performance.now()
  t.equal(await server.stop('SIGTERM'), 0, 'exit 0')
  // Its steps still run (they ignore their signals) for up to a minute: the grace is not spent on them.
  t.ok(performance.now() - stoppedAt < 30_000, 'not held up by the steps that timed out')
  t.match(await census(path), { failed: 5, processing: 0 })
})

t.test('a second signal sent deliberately later forces the exit at once', { skip: SKIP_SQLITE_ONLY }, async (t) => {
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

/** The grace of the processes stopped under a backlog: far longer than what they have under way takes. */
const BACKLOG_GRACE_MS = 60_000

/**
 * Stops a process with SIGTERM while it works through a backlog, round after round, each time at
 * some point of its claim-run-settle cycle: a claim under way must be handed back too, at once.
 */
async function stopRounds (t: Test, database: string, rounds: number, start: () => Promise<ServerProcess>): Promise<void> {
  let completed = (await census(database)).completed
  for (let round = 1; round <= rounds; round++) {
    const proc = await start()
    t.teardown(() => { proc.child.kill('SIGKILL') })
    await waitFor(async () => (await census(database)).completed > completed, `round ${round}: orders to be completed`, 30_000)
    const signalled = Date.now()
    t.equal(await proc.stop('SIGTERM'), 0, `round ${round}: exit 0`)
    // Its attempts take no time: the claims of a claim under way at the signal were waited for
    // until the grace ran out (10 s at the default), though no attempt had started for them.
    const stoppedMs = Date.now() - signalled
    if (!t.ok(stoppedMs < BACKLOG_GRACE_MS / 2, `round ${round}: stopped in ${stoppedMs} ms, not at the end of the grace`)) return
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
  const env = { DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', SHUTDOWN_GRACE_MS: String(BACKLOG_GRACE_MS) }
  await stopRounds(t, database.url, 12, () => ServerProcess.startWorker(env))
})

t.test('the SQLite server stopped under a large backlog hands back every claim, round after round', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const store = new SqliteStore(path)
  await backlog(store, 100_000)
  await store.close()
  const env = { DATABASE_URL: `sqlite:${path}`, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', SHUTDOWN_GRACE_MS: String(BACKLOG_GRACE_MS) }
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
