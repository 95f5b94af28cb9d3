import { join } from 'node:path'
import pg from 'pg'
import t, { type Test } from 'tap'
import { OrderProcessor } from '../src/processing/processor.ts'
import type { Claim, OrderStore } from '../src/store/order-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, POSTGRES_URL, SKIP_POSTGRES } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'
import { allOrders, recount } from './support/store-contract.ts'

// A worker process on PostgreSQL, started twice, and waits of a second or two.
t.setTimeout(120_000)

/**
 * A store for one test, and a way to change the processing state behind its back, as a lost
 * announcement would leave it: on SQLite a second connection to its file (it announces only
 * in-process), on PostgreSQL an UPDATE without NOTIFY.
 */
async function storeForTest (t: Test): Promise<{ store: OrderStore, setUntold: (state: 'running' | 'paused') => Promise<void> }> {
  if (!POSTGRES_URL) {
    const path = join(tempDir(t), 'orders.db')
    const store = new SqliteStore(path)
    const other = new SqliteStore(path)
    t.teardown(async () => { await other.close(); await store.close() })
    return { store, setUntold: async (state) => { await other.setProcessingState(state, Date.now) } }
  }
  const database = await createDatabase()
  const store = await openPgStore(database.url)
  const other = new pg.Client({ connectionString: database.url })
  await other.connect()
  t.teardown(async () => { await other.end(); await store.close(); await database.drop() })
  return { store, setUntold: async (state) => { await other.query('UPDATE processing_state SET state = $1, since = $2', [state, Date.now()]) } }
}

/** Counts the claims a processor asks for and the times it reads the processing state. */
function counted (store: OrderStore) {
  const calls = { claim: 0, processingState: 0 }
  const claim = store.claim.bind(store)
  const processingState = store.processingState.bind(store)
  store.claim = async (...args) => { calls.claim++; return claim(...args) }
  store.processingState = async () => { calls.processingState++; return processingState() }
  return calls
}

/** Work that waits until the test lets it finish. */
function gatedWork () {
  const started: Claim[] = []
  const gates: Array<() => void> = []
  return {
    started,
    openAll: () => { for (const open of gates.splice(0)) open() },
    work: (claim: Claim) => {
      started.push(claim)
      return new Promise<void>((resolve) => gates.push(resolve))
    }
  }
}

function processorOn (t: Test, store: OrderStore, work: (claim: Claim) => Promise<void> = async () => {}) {
  const processor = new OrderProcessor(store, { concurrency: 2, leaseMs: 30_000, maxAttempts: 3, retryBackoffMs: 0, attemptTimeoutMs: 300_000, work })
  t.teardown(() => processor.stop(0))
  return processor
}

const statuses = async (store: OrderStore) => Object.fromEntries((await allOrders(store)).map((o) => [o.order_id, o.status]))

/** Resolves once the processor has read the processing state `times` more times: it reads it at each recovery, once a second. */
async function recoveries (calls: { processingState: number }, times: number): Promise<void> {
  const from = calls.processingState
  await waitFor(() => calls.processingState >= from + times, `${times} recoveries`, 10_000)
}

t.test('paused, a processor lets its orders in flight finish, then sleeps without claiming; resumed, it takes the orders that waited', async (t) => {
  const { store } = await storeForTest(t)
  const calls = counted(store)
  const gate = gatedWork()
  const processor = processorOn(t, store, gate.work)
  processor.start()
  await store.createMany(['A', 'B', 'C'].map((id) => anOrder(id)), Date.now(), Date.now())
  await waitFor(() => gate.started.length === 2, 'two orders in flight')

  await store.setProcessingState('paused', Date.now)
  gate.openAll()
  await waitFor(async () => (await store.stats()).counts.Completed === 2, 'the orders in flight to finish')
  await store.create(anOrder('D'), Date.now(), Date.now())
  const claimsWhilePaused = calls.claim
  await recoveries(calls, 2)
  t.equal(calls.claim, claimsWhilePaused, 'no claim asked for while paused, over two recoveries: it does not poll')
  t.same(await statuses(store), { A: 'Completed', B: 'Completed', C: 'Pending', D: 'Pending' }, 'the others wait')

  // Just after a recovery, the next is a second away.
  await recoveries(calls, 1)
  const reads = calls.processingState
  await store.setProcessingState('running', Date.now)
  await waitFor(() => gate.started.length === 4, 'the waiting orders to start')
  t.equal(calls.processingState, reads, 'woken by the resume, before it read the state again')
  gate.openAll()
  await waitFor(async () => (await store.stats()).counts.Completed === 4, 'all completed')
  t.same(await store.stats(), await recount(store))
})

t.test('a processor started while paused claims nothing until resumed', async (t) => {
  const { store } = await storeForTest(t)
  await store.setProcessingState('paused', Date.now)
  await store.create(anOrder('A'), Date.now(), Date.now())
  const calls = counted(store)
  const processor = processorOn(t, store)
  processor.start()
  await recoveries(calls, 2)
  t.equal(calls.claim, 0, 'it read the state at start')
  t.equal((await store.get('A'))?.status, 'Pending')
  await store.setProcessingState('running', Date.now)
  await waitFor(async () => (await store.get('A'))?.status === 'Completed', 'the order processed once resumed')
})

t.test('a change of state whose announcement was lost is found at the next recovery', async (t) => {
  const { store, setUntold } = await storeForTest(t)
  const calls = counted(store)
  const processor = processorOn(t, store)
  processor.start()
  await setUntold('paused')
  await recoveries(calls, 1)
  const claims = calls.claim
  await store.create(anOrder('A'), Date.now(), Date.now())
  await recoveries(calls, 1)
  t.equal(calls.claim, claims, 'it stopped asking for claims')
  t.equal((await store.get('A'))?.status, 'Pending')

  const resumedAt = Date.now()
  await setUntold('running')
  await waitFor(async () => (await store.get('A'))?.status === 'Completed', 'the order processed')
  t.pass(`resumed without an announcement after ${Date.now() - resumedAt} ms (recovery runs once a second)`)
})

t.test('PostgreSQL: a worker process stops claiming the moment a pause is answered, keeps it across a restart, and resumes', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const workers: ServerProcess[] = []
  t.teardown(async () => {
    for (const worker of workers) worker.child.kill('SIGKILL')
    await database.drop()
  })
  const env = { DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '20-40', PROCESSOR_CONCURRENCY: '20', LEASE_MS: '2000', DATABASE_TIMEOUT_MS: '1000' }
  const store = await openPgStore(database.url)
  t.teardown(() => store.close())
  workers.push(await ServerProcess.startWorker(env))
  const ids = Array.from({ length: 3000 }, (_, i) => `w${i}`)
  await store.createMany(ids.map((id) => anOrder(id)), Date.now(), Date.now())
  await waitFor(async () => (await store.stats()).counts.Completed >= 100, 'the worker to be busy')

  const paused = await store.setProcessingState('paused', Date.now)
  const answeredAt = Date.now()
  await waitFor(async () => (await store.stats()).counts.Processing === 0, 'the orders in flight to finish')
  const drainedIn = Date.now() - answeredAt
  const { counts } = await store.stats()
  t.ok(counts.Pending > 0, `${counts.Completed} completed, ${counts.Pending} waiting`)
  const late = (await allOrders(store)).filter((o) => o.processing_started_at !== null && o.processing_started_at > answeredAt)
  t.same(late.map((o) => o.order_id), [], `no order started after the pause was answered (in flight drained in ${drainedIn} ms)`)
  const afterSince = (await allOrders(store)).filter((o) => o.processing_started_at !== null && o.processing_started_at > paused.since)
  t.same(afterSince.map((o) => o.order_id), [], 'nor after its since: it is taken once the claims under way have committed')

  t.equal(await workers[0]!.stop('SIGTERM'), 0)
  workers.push(await ServerProcess.startWorker(env))
  // The restarted worker reads the state at start, and again once a second: two seconds see both.
  await new Promise((resolve) => setTimeout(resolve, 2000))
  t.same((await store.stats()).counts, counts, 'a worker started while paused takes nothing')
  t.same(await store.processingState(), paused)

  const resumedAt = Date.now()
  await store.setProcessingState('running', () => resumedAt)
  await waitFor(async () => (await store.stats()).counts.Processing > 0 || (await store.stats()).counts.Pending === 0, 'the worker to take orders again')
  const resumedIn = Date.now() - resumedAt
  await waitFor(async () => (await store.stats()).counts.Completed === ids.length, 'every order completed', 60_000)
  t.pass(`the worker took orders again ${resumedIn} ms after the resume`)
  t.same(await store.stats(), await recount(store))
  t.equal(await workers[1]!.stop('SIGTERM'), 0)
})
