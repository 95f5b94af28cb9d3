import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { OrderProcessor, type ProcessorOptions } from '../src/processing/processor.ts'
import { settleOutcomes } from '../src/processing/settle-outcomes.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import type { Claim, OrderStore } from '../src/store/order-store.ts'
import type { OrderRecord } from '../src/order.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { createDatabase, openPgStore, POSTGRES_URL } from './support/pg-database.ts'
import { allOrders, recount } from './support/store-contract.ts'

function setup (t: Test, options: Partial<ProcessorOptions> = {}) {
  const store = new SqliteStore(':memory:')
  const processor = new OrderProcessor(store, {
    concurrency: 10, leaseMs: 30_000, maxAttempts: 3, retryBackoffMs: 0, attemptTimeoutMs: 300_000, work: async () => {}, ...options
  })
  t.teardown(async () => { await processor.stop(0); await store.close() })
  return { store, processor }
}

/** Work that waits until the test lets it finish. */
function gatedWork () {
  const started: Claim[] = []
  const gates: Array<() => void> = []
  return {
    started,
    open: (i: number) => gates[i]?.(),
    openAll: () => { for (const open of gates.splice(0)) open() },
    work: (claim: Claim) => {
      started.push(claim)
      return new Promise<void>((resolve) => gates.push(resolve))
    }
  }
}

const statusOf = async (store: OrderStore, id: string) => (await store.get(id))?.status

/** A store for one test, closed when it ends: in memory, or a fresh PostgreSQL database when DATABASE_URL names a server. */
async function storeForTest (t: Test): Promise<OrderStore> {
  if (!POSTGRES_URL) {
    const store = new SqliteStore(':memory:')
    t.teardown(() => store.close())
    return store
  }
  const database = await createDatabase()
  const store = await openPgStore(database.url)
  t.teardown(async () => { await store.close(); await database.drop() })
  return store
}

t.test('processes existing and new orders to Completed', async (t) => {
  const { store, processor } = setup(t)
  await store.create(anOrder('before-start'), Date.now(), Date.now())
  processor.start()
  await store.create(anOrder('after-start'), Date.now(), Date.now())
  await waitFor(async () => (await statusOf(store, 'before-start')) === 'Completed' &&
    (await statusOf(store, 'after-start')) === 'Completed', 'both orders completed')
  t.match(await store.get('after-start'), { attempts: 1, last_error: null })
  t.same(await store.stats(), await recount(store))
})

t.test('waits for an order to become available, woken by a timer rather than a poll', async (t) => {
  const { store, processor } = setup(t)
  processor.start()
  const created = Date.now()
  await store.create(anOrder('delayed'), created, created + 150)
  await waitFor(async () => (await statusOf(store, 'delayed')) === 'Completed', 'the delayed order')
  const order = await store.get('delayed')
  t.ok(order!.processing_started_at! >= created + 150, 'not started before it was available')
})

t.test('never runs more than its concurrency at once, nor claims more', async (t) => {
  const gate = gatedWork()
  const { store, processor } = setup(t, { concurrency: 3, work: gate.work })
  processor.start()
  await store.createMany(Array.from({ length: 30 }, (_, i) => anOrder(`c${i}`)), Date.now(), Date.now())
  // A fourth order started too early would make the count pass the next multiple of three.
  for (let round = 1; round <= 10; round++) {
    await waitFor(() => gate.started.length === round * 3, `round ${round} to start`)
    t.equal((await store.stats()).counts.Processing, 3, `round ${round}: three claimed`)
    gate.openAll()
  }
  await waitFor(async () => (await store.stats()).counts.Completed === 30, 'all completed')
  t.equal(gate.started.length, 30)
})

t.test('claims the next orders while the last ones are being settled, holding at most twice its concurrency', async (t) => {
  const store = new SqliteStore(':memory:')
  let openSettles!: () => void
  const settlesOpen = new Promise<void>((resolve) => { openSettles = resolve })
  const settle = store.settle.bind(store)
  // Settles wait until the test lets them through, as a slow database's would.
  store.settle = async (outcomes, now) => { await settlesOpen; return settle(outcomes, now) }
  const claim = store.claim.bind(store)
  let mostClaimed = 0
  store.claim = async (...args) => {
    const claims = await claim(...args)
    mostClaimed = Math.max(mostClaimed, (await store.stats()).counts.Processing)
    return claims
  }
  const processor = new OrderProcessor(store, {
    concurrency: 3, leaseMs: 30_000, maxAttempts: 3, retryBackoffMs: 0, attemptTimeoutMs: 300_000, work: async () => {}
  })
  t.teardown(async () => { await processor.stop(0); await store.close() })
  await store.createMany(Array.from({ length: 30 }, (_, i) => anOrder(`o${i}`)), Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Processing === 6, 'three more claimed and run while the first three wait for their settle')
  openSettles()
  await waitFor(async () => (await store.stats()).counts.Completed === 30, 'all completed')
  t.equal(mostClaimed, 6, 'never more than three running and three being settled')
  t.same(await store.stats(), await recount(store))
})

t.test('retries a failing order with backoff, then marks it Failed with the error', async (t) => {
  const { store, processor } = setup(t, {
    maxAttempts: 3,
    retryBackoffMs: 20,
    work: async () => { throw new Error('payment gateway down') }
  })
  processor.start()
  await store.create(anOrder('doomed'), Date.now(), Date.now())
  await waitFor(async () => (await statusOf(store, 'doomed')) === 'Failed', 'the order failed')
  t.match(await store.get('doomed'), { attempts: 3, last_error: 'payment gateway down', completed_at: null })
  t.same(await store.stats(), await recount(store))
})

t.test('a failure followed by success completes on the second attempt', async (t) => {
  let calls = 0
  const { store, processor } = setup(t, {
    work: async () => { if (++calls === 1) throw new Error('transient') }
  })
  processor.start()
  await store.create(anOrder('flaky'), Date.now(), Date.now())
  await waitFor(async () => (await statusOf(store, 'flaky')) === 'Completed', 'completed after a retry')
  t.match(await store.get('flaky'), { attempts: 2, last_error: null })
})

t.test('a cancelled order is never processed', async (t) => {
  const processed: string[] = []
  const { store, processor } = setup(t, { work: async (claim) => { processed.push(claim.order_id) } })
  const now = Date.now()
  await store.create(anOrder('cancel-me'), now, now + 100)
  await store.create(anOrder('keep-me'), now, now + 100)
  processor.start()
  t.equal((await store.cancel('cancel-me', Date.now())).cancelled, true)
  await waitFor(async () => (await statusOf(store, 'keep-me')) === 'Completed', 'the other order')
  t.same(processed, ['keep-me'])
  t.equal(await statusOf(store, 'cancel-me'), 'Cancelled')
})

t.test('orders of a worker that died are taken over when its lease ends', async (t) => {
  const { store, processor } = setup(t)
  const now = Date.now()
  await store.create(anOrder('orphan'), now, now)
  // A worker claims the order and dies without settling it.
  const [dead] = await store.claim(1, now, 100)
  processor.start()
  await waitFor(async () => (await statusOf(store, 'orphan')) === 'Completed', 'the orphan completed')
  t.match(await store.get('orphan'), { attempts: 2 })
  t.equal(await store.settle([{ claim: dead!, ok: true }], Date.now()), 0, 'the dead worker cannot settle it')
})

t.test('stop lets running orders finish within the grace period', async (t) => {
  const gate = gatedWork()
  const { store, processor } = setup(t, { work: gate.work })
  processor.start()
  await store.create(anOrder('in-flight'), Date.now(), Date.now())
  await waitFor(() => gate.started.length === 1, 'the order started')
  const stopped = processor.stop(5_000)
  gate.openAll()
  await stopped
  t.equal(await statusOf(store, 'in-flight'), 'Completed')
  // The stopped processor would claim the new order first, being woken by the store before the next one starts.
  await store.create(anOrder('after-stop'), Date.now(), Date.now())
  const next = new OrderProcessor(store, { concurrency: 1, leaseMs: 30_000, maxAttempts: 3, retryBackoffMs: 0, attemptTimeoutMs: 300_000, work: async () => {} })
  t.teardown(() => next.stop(0))
  next.start()
  await waitFor(async () => (await statusOf(store, 'after-stop')) === 'Completed', 'the next processor to take it')
  t.same(gate.started.map((claim) => claim.order_id), ['in-flight'], 'the stopped processor claimed nothing more')
})

t.test('stop hands back claims still running after the grace period', async (t) => {
  const gate = gatedWork()
  const { store, processor } = setup(t, { work: gate.work })
  processor.start()
  await store.createMany([anOrder('slow1'), anOrder('slow2')], Date.now(), Date.now())
  await waitFor(() => gate.started.length === 2, 'both started')
  await processor.stop(20)
  t.equal(await statusOf(store, 'slow1'), 'Pending')
  t.equal(await statusOf(store, 'slow2'), 'Pending')
  t.equal(await store.settle([{ claim: gate.started[0]!, ok: true }], Date.now()), 0, 'a handed-back claim settles nothing')
  t.same(await store.stats(), await recount(store))
  gate.openAll()
})

t.test('a store failure while settling leaves the order to be recovered, not lost', async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const store = new SqliteStore(path, 20)
  // Another program holds the write lock from the moment the work runs until the settle has failed
  // (claims tried meanwhile fail too).
  const other = new Database(path)
  const errors: string[] = []
  const processor = new OrderProcessor(store, {
    concurrency: 5,
    leaseMs: 200,
    maxAttempts: 3,
    retryBackoffMs: 0,
    attemptTimeoutMs: 300_000,
    work: async () => { if (errors.length === 0 && !other.inTransaction) other.exec('BEGIN EXCLUSIVE') },
    onError: (_err, context) => { errors.push(context); if (context === 'settling orders') other.exec('ROLLBACK') }
  })
  t.teardown(async () => { await processor.stop(0); other.close(); await store.close() })
  processor.start()
  await store.create(anOrder('survivor'), Date.now(), Date.now())
  await waitFor(async () => (await statusOf(store, 'survivor')) === 'Completed', 'completed after recovery')
  t.equal(errors.filter((context) => context === 'settling orders').length, 1)
  t.match(await store.get('survivor'), { attempts: 2 })
})

t.test('an order is claimed as soon as it is available even when a timer fires early', async (t) => {
  // The processor's clock runs 5 ms behind the store's: as if every timer fired 5 ms early.
  const { store, processor } = setup(t, { now: () => Date.now() - 5 })
  processor.start()
  const created = Date.now()
  await store.create(anOrder('early-timer'), created, created + 50)
  await waitFor(async () => (await statusOf(store, 'early-timer')) === 'Completed', 'completion')
  const order = await store.get('early-timer')
  t.ok(order!.processing_started_at! - created < 500, 'not left waiting for the next lease recovery (1 s)')
})

t.test('an attempt whose lease ended and was taken over is aborted once a renewal finds it lost; it keeps its place until its work returns', async (t) => {
  const store = await storeForTest(t)
  const aborted: unknown[] = []
  let stale: Claim | undefined
  let letGo: () => void = () => {}
  const returned = new Promise<void>((resolve) => { letGo = resolve })
  const errors: string[] = []
  const processor = new OrderProcessor(store, {
    // One place: the stale attempt holds it, so this process does not claim the order again itself.
    concurrency: 1,
    leaseMs: 300,
    maxAttempts: 3,
    retryBackoffMs: 0,
    attemptTimeoutMs: 300_000,
    // The stale attempt ignores its abort until the test lets it return.
    work: async (claim, { signal }) => {
      if (claim.order_id !== 'taken') return
      stale = claim
      signal.addEventListener('abort', () => aborted.push(signal.reason), { once: true })
      await returned
    },
    onError: (err, context) => errors.push(`${context}: ${(err as Error).message}`)
  })
  t.teardown(() => processor.stop(0))
  // Its renewals stall, as those of a frozen process or of a store slower than the lease, until the test lets them through.
  const renew = store.extendLeases.bind(store)
  let unstall: () => void = () => {}
  const stalled = new Promise<void>((resolve) => { unstall = resolve })
  store.extendLeases = async (...args) => { await stalled; return renew(...args) }
  const settle = store.settle.bind(store)
  const settledTokens: string[] = []
  store.settle = async (outcomes, now) => {
    settledTokens.push(...outcomes.map((o) => o.claim.token))
    return settle(outcomes, now)
  }
  processor.start()
  await store.create(anOrder('taken'), Date.now(), Date.now())
  await waitFor(() => stale, 'the order\'s attempt to start')
  // Another process takes the order over once the lease has run out, and completes it.
  await waitFor(async () => (await store.recoverExpired(Date.now(), 3, [])) === 1, 'the lease to run out')
  const [theirs] = await store.claim(1, Date.now(), 30_000)
  t.equal(theirs?.order_id, 'taken', 'the other process claimed it')
  unstall()
  await waitFor(() => aborted.length === 1, 'the stale attempt to be aborted')
  t.match(aborted[0], { name: 'AbortError', message: /lease ended and another process took it over/ })
  t.match(errors, [/^renewing leases: the leases of 1 order ended before their attempts did.*\(taken\)/])
  t.equal(await store.settle([{ claim: theirs!, ok: true }], Date.now()), 1, 'the other process completes it')
  // Until its work returns, the aborted attempt keeps the one place.
  await store.create(anOrder('next'), Date.now(), Date.now())
  const lettingGo = Date.now()
  letGo()
  await waitFor(async () => (await statusOf(store, 'next')) === 'Completed', 'the next order to be done')
  t.ok((await store.get('next'))!.processing_started_at! >= lettingGo, 'the next order started once the aborted work returned')
  t.notOk(settledTokens.includes(stale!.token), 'the stale attempt\'s outcome was never sent to the store')
  t.match(await store.get('taken'), { status: 'Completed', attempts: 2 })
  t.same(await store.stats(), await recount(store))
})

t.test('a claim taken over and claimed again by this same process is tracked apart from the stale one', async (t) => {
  const gate = gatedWork()
  const { store, processor } = setup(t, { leaseMs: 50, work: gate.work })
  // Its lease renewals never land, as when a process is frozen for longer than its lease.
  store.extendLeases = async () => []
  const settle = store.settle.bind(store)
  const refused: number[] = []
  store.settle = async (outcomes, now) => {
    const applied = await settle(outcomes, now)
    refused.push(outcomes.length - applied)
    return applied
  }
  processor.start()
  await store.create(anOrder('twice'), Date.now(), Date.now())
  await waitFor(() => gate.started.length === 1, 'the order to start')
  // Another process takes the order over once the lease has run out; this one claims it again.
  await waitFor(async () => (await store.recoverExpired(Date.now(), 3, [])) === 1, 'the lease to run out')
  await waitFor(() => gate.started.length === 2, 'the order to be claimed again')
  t.not(gate.started[0]!.token, gate.started[1]!.token)
  gate.open(0)
  await waitFor(() => refused.length === 1, 'the stale outcome to be settled')
  t.same(refused, [1], 'and refused')
  await processor.stop(0)
  t.equal(await statusOf(store, 'twice'), 'Pending', 'the live claim was handed back at stop')
  t.same(await store.stats(), await recount(store))
})

t.test('a processor runs once', async (t) => {
  const { processor } = setup(t)
  processor.start()
  t.throws(() => processor.start(), /already running/)
  await processor.stop(0)
  t.throws(() => processor.start(), /already stopped/)
})

t.test('work that outlasts its lease is still done once: a process never recovers the claims it is working on', async (t) => {
  const store = await storeForTest(t)
  const TOTAL = 3000
  const LEASE_MS = 200
  // Its outcome lands after the lease has ended, as a settle delayed by load would, and the
  // processor looks for expired leases (every LEASE_MS / 2) while the work runs.
  const processor = new OrderProcessor(store, {
    concurrency: 1000, leaseMs: LEASE_MS, maxAttempts: 3, retryBackoffMs: 0, attemptTimeoutMs: 300_000, work: () => sleep(LEASE_MS + 150)
  })
  // Renewals that never land, as from a store too slow for them: only the held tokens keep the claims.
  store.extendLeases = async () => []
  t.teardown(() => processor.stop(0))
  const claimed = new Map<string, number>()
  let done = 0
  store.onChanges((changes) => {
    for (const change of changes) {
      if (change.status === 'Processing') claimed.set(change.order_id, (claimed.get(change.order_id) ?? 0) + 1)
      else if (change.status === 'Completed' || change.status === 'Failed') done++
    }
  })
  await store.createMany(Array.from({ length: TOTAL }, (_, i) => anOrder(`once-${i}`)), Date.now(), Date.now())
  processor.start()
  await waitFor(() => done === TOTAL, 'every order to be done', 60_000)
  t.equal(claimed.size, TOTAL)
  t.same([...claimed].filter(([, times]) => times !== 1), [], 'each order was claimed once')
  t.same((await allOrders(store)).filter((order) => order.attempts !== 1 || order.status !== 'Completed'), [], 'each completed on its first attempt')
  t.same(await store.stats(), await recount(store))
})

// No attempt starts for what a claim under way at the stop brings: it is handed back at once, the
// grace not waited out (it was, whole: 10 s a stop of a PostgreSQL worker under a backlog).
for (const graceMs of [0, 60_000]) {
  t.test(`stop waits for a claim under way and hands its orders back before the store is closed, at once (grace ${graceMs} ms)`, async (t) => {
    const events: string[] = []
    const { store, processor } = setup(t, { onError: (err, context) => { events.push(`failed while ${context}: ${(err as Error).message}`) } })
    // The claim commits, and its answer reaches the processor only once stop() has been called.
    let committed!: () => void
    const claimCommitted = new Promise<void>((resolve) => { committed = resolve })
    let answer!: () => void
    const answered = new Promise<void>((resolve) => { answer = resolve })
    const claim = store.claim.bind(store)
    store.claim = async (...args) => {
      const claims = await claim(...args)
      committed()
      await answered
      return claims
    }
    const release = store.release.bind(store)
    store.release = async (claims, now) => {
      const released = await release(claims, now)
      events.push(`handed back ${released}`)
      return released
    }
    await store.createMany([anOrder('x1'), anOrder('x2')], Date.now(), Date.now())
    processor.start()
    await claimCommitted
    const stopped = processor.stop(graceMs).then(async () => {
      t.match(await store.get('x1'), { status: 'Pending', attempts: 0 })
      await store.close()
      events.push('store closed')
    })
    setImmediate(answer)
    const done = stopped.then(() => 'stopped')
    t.equal(await Promise.race([done, graceMs > 0 ? sleep(graceMs / 2, 'the grace waited out', { ref: false }) : done]), 'stopped')
    t.same(events, ['handed back 2', 'store closed'])
  })
}

t.test('what the work returns is kept as the order\'s result, written with the completion', async (t) => {
  const results: Record<string, unknown> = { object: { tracking_id: 'T-1', items: [1, 2] }, text: 'shipped', nothing: undefined, null: null, zero: 0 }
  const { store, processor } = setup(t, { work: async (claim) => results[claim.order_id] })
  // Read as each completion is announced (SQLite reads at once): the result is there with it.
  const readAtCompletion: Array<Promise<OrderRecord | undefined>> = []
  store.onChanges((changes) => { for (const c of changes) readAtCompletion.push(store.get(c.order_id)) }, ['Completed'])
  await store.createMany(Object.keys(results).map((id) => anOrder(id)), Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Completed === 5, 'all completed')
  const kept = Object.fromEntries((await Promise.all(readAtCompletion)).map((order) => [order!.order_id, [order!.status, order!.result]]))
  t.same(kept, {
    object: ['Completed', '{"tracking_id":"T-1","items":[1,2]}'],
    text: ['Completed', '"shipped"'],
    nothing: ['Completed', null],
    null: ['Completed', null],
    zero: ['Completed', '0']
  })
})

t.test('an error with retryable === false fails the order at once; other errors are retried', async (t) => {
  const { store, processor } = setup(t, {
    maxAttempts: 3,
    work: async (claim) => {
      if (claim.order_id === 'declined') throw Object.assign(new Error('card declined'), { retryable: false })
      if (claim.order_id === 'plain-object') throw { message: 'gateway said no', retryable: false } // eslint-disable-line no-throw-literal
      throw Object.assign(new Error('gateway timeout'), { retryable: true })
    }
  })
  await store.createMany([anOrder('declined'), anOrder('plain-object'), anOrder('flaky')], Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Failed === 3, 'all failed')
  t.match(await store.get('declined'), { status: 'Failed', attempts: 1, last_error: 'card declined' })
  t.match(await store.get('plain-object'), { status: 'Failed', attempts: 1, last_error: 'gateway said no' })
  t.match(await store.get('flaky'), { status: 'Failed', attempts: 3, last_error: 'gateway timeout' })
  t.same(await store.stats(), await recount(store))
})

t.test('a thrown value that is not an Error, or a huge message, gives a last_error a person can read', async (t) => {
  const thrown: Record<string, unknown> = {
    string: 'out of stock',
    object: { code: 42 },
    undefined,
    empty: new Error(''),
    huge: new Error(`upstream answered: ${'<html>'.repeat(10_000)}`)
  }
  const { store, processor } = setup(t, { maxAttempts: 1, work: async (claim) => { throw thrown[claim.order_id] } })
  await store.createMany(Object.keys(thrown).map((id) => anOrder(id)), Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Failed === 5, 'all failed')
  const errors = Object.fromEntries(await Promise.all(Object.keys(thrown).map(async (id) => [id, (await store.get(id))!.last_error])))
  t.match(errors, {
    string: 'out of stock',
    object: 'a value that is not an Error was thrown: {"code":42}',
    undefined: 'a value that is not an Error was thrown: undefined',
    empty: 'Error'
  })
  t.equal(errors.huge.length, 2000, 'cut at 2,000 characters')
  t.match(errors.huge, /^upstream answered: <html><html>.*… \[cut: 60019 characters in all\]$/)
})

/** Control characters but tab and newline, and halves of surrogate pairs: none may reach last_error. */
// eslint-disable-next-line no-control-regex
const UNREADABLE = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]|\p{Cs}/u

t.test('an odd thrown value or result fails only its own order: each step runs once, the good orders of its batch complete', async (t) => {
  const store = await storeForTest(t)
  const { proxy: revoked, revoke } = Proxy.revocable({}, {})
  revoke()
  const nested = { f: () => 1, y: 2 }
  const thrown: Record<string, unknown> = {
    string: 'out of stock',
    'plain-object': { code: 42 },
    'error-object-message': Object.assign(new Error('x'), { message: { detail: 'no' } }),
    'error-nul': new Error('upstream said: \u0000\u0001\u001b[31m\ud800 end'),
    'revoked-proxy': revoked,
    'throwing-getters': { get message (): string { throw new Error('getter') }, get retryable (): boolean { throw new Error('getter') } },
    megabyte: new Error(`upstream answered: ${'x'.repeat(1024 * 1024)}`),
    symbol: Symbol('odd')
  }
  const results: Record<string, unknown> = { 'good-1': { ok: 1 }, 'good-2': 'done', 'result-nested-function': nested }
  const ids = [...Object.keys(thrown), ...Object.keys(results)]
  const runs = new Map<string, number>()
  let release!: () => void
  const allStarted = new Promise<void>((resolve) => { release = resolve })
  const processor = new OrderProcessor(store, {
    concurrency: ids.length,
    leaseMs: 1000,
    maxAttempts: 1,
    retryBackoffMs: 0,
    attemptTimeoutMs: 300_000,
    work: async (claim) => {
      runs.set(claim.order_id, (runs.get(claim.order_id) ?? 0) + 1)
      if ([...runs.values()].reduce((a, b) => a + b) === ids.length) release()
      // All end in the same turn, so that their outcomes are settled in one batch.
      await allStarted
      if (claim.order_id in thrown) throw thrown[claim.order_id]
      return results[claim.order_id]
    }
  })
  t.teardown(() => processor.stop(0))
  await store.createMany(ids.map((id) => anOrder(id)), Date.now(), Date.now())
  processor.start()
  // One read of the counts: two could straddle the claim (Processing 0 before it, Pending 0 after).
  await waitFor(async () => {
    const { counts } = await store.stats()
    return counts.Processing === 0 && counts.Pending === 0
  }, 'every order settled')
  t.same(Object.fromEntries(runs), Object.fromEntries(ids.map((id) => [id, 1])), 'the step ran once per order')
  const orders = Object.fromEntries(await Promise.all(ids.map(async (id) => [id, (await store.get(id))!] as const)))
  t.match(orders, {
    'good-1': { status: 'Completed', result: '{"ok":1}', attempts: 1 },
    'good-2': { status: 'Completed', result: '"done"', attempts: 1 },
    'result-nested-function': { status: 'Failed', last_error: 'result refused: $.f is a function' },
    string: { status: 'Failed', last_error: 'out of stock' },
    'plain-object': { status: 'Failed', last_error: 'a value that is not an Error was thrown: {"code":42}' },
    'error-object-message': { status: 'Failed', last_error: 'Error whose message is not text: {"detail":"no"}' },
    'error-nul': { status: 'Failed', last_error: 'upstream said: \ufffd\ufffd\ufffd[31m\ufffd end' },
    'revoked-proxy': { status: 'Failed', last_error: 'a value that could not be inspected was thrown' },
    'throwing-getters': { status: 'Failed', last_error: 'a value that could not be inspected was thrown' },
    symbol: { status: 'Failed', last_error: 'a value that is not an Error was thrown: Symbol(odd)' }
  })
  const megabyte = orders.megabyte!.last_error!
  t.equal(megabyte.length, 2000, 'a megabyte message is cut at 2,000 characters')
  t.match(megabyte, /^upstream answered: xxx.*x… \[cut: 1048595 characters in all\]$/)
  for (const id of ids) t.notMatch(orders[id]!.last_error ?? '', UNREADABLE, `${id}: last_error is readable`)
  t.same(await store.stats(), await recount(store))
})

t.test('an outcome the store refuses fails only its own order; the others of its batch are applied', async (t) => {
  const store = await storeForTest(t)
  const now = Date.now()
  await store.createMany(['completes', 'bad-error', 'bad-result', 'retries'].map((id) => anOrder(id)), now, now)
  const claims = Object.fromEntries((await store.claim(10, now, 30_000)).map((claim) => [claim.order_id, claim]))
  // What each store refuses to bind: PostgreSQL text cannot hold NUL; better-sqlite3 binds no object.
  const poison = (POSTGRES_URL ? 'NUL \u0000 here' : { not: 'text' }) as string
  const batches: number[] = []
  await settleOutcomes([
    { claim: claims.completes!, ok: true, result: '{"a":1}' },
    { claim: claims['bad-error']!, ok: false, error: poison, retryAt: null },
    { claim: claims['bad-result']!, ok: true, result: poison },
    { claim: claims.retries!, ok: false, error: 'gateway timeout', retryAt: now + 60_000 }
  ], async (outcomes) => { batches.push(outcomes.length); return store.settle(outcomes, now) })
  t.same(batches, [4, 1, 1, 1, 1, 1, 1], 'the batch, then one by one, then each refused one as a failure')
  t.match(await store.get('completes'), { status: 'Completed', result: '{"a":1}' })
  t.match(await store.get('bad-error'), { status: 'Failed', last_error: /^the attempt failed, and the store refused its error \(.+\)$/ })
  t.match(await store.get('bad-result'), { status: 'Failed', last_error: /^result refused by the store: .+/ })
  t.match(await store.get('retries'), { status: 'Pending', last_error: 'gateway timeout' })
  t.same(await store.stats(), await recount(store))
})

t.test('a result that JSON cannot hold, anywhere in it, or over 64 KiB of it, fails the order at once naming the path', async (t) => {
  const cycle: Record<string, unknown> = { id: 1 }
  cycle.parent = { children: [cycle] }
  const results: Record<string, unknown> = {
    bigint: { amount: 10n },
    function: () => {},
    'nested-function': { f: () => 1, y: 2 },
    'symbol-in-array': { tags: ['a', Symbol('b')] },
    'undefined-in-array': [1, undefined],
    'odd-key': { 'a b': { 'c\u0000': Number.NaN } },
    cycle,
    large: { blob: 'x'.repeat(64 * 1024) },
    // Counted in bytes of UTF-8, not in characters.
    accented: 'é'.repeat(33_000),
    'just-fits': 'x'.repeat(64 * 1024 - 2),
    // Left out, as JSON.stringify does: an undefined property reads as absent.
    'undefined-property': { a: undefined, b: 1, when: new Date(0) }
  }
  const { store, processor } = setup(t, { work: async (claim) => results[claim.order_id] })
  await store.createMany(Object.keys(results).map((id) => anOrder(id)), Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Failed === 9 && (await store.stats()).counts.Completed === 2, 'all done')
  const failed = async (id: string) => (await store.get(id))!
  t.match(await failed('bigint'), { status: 'Failed', attempts: 1, last_error: 'result refused: $.amount is a BigInt' })
  t.match(await failed('function'), { status: 'Failed', attempts: 1, last_error: 'result refused: $ is a function' })
  t.match(await failed('nested-function'), { status: 'Failed', attempts: 1, last_error: 'result refused: $.f is a function' })
  t.match(await failed('symbol-in-array'), { status: 'Failed', last_error: 'result refused: $.tags[1] is a Symbol' })
  t.match(await failed('undefined-in-array'), { status: 'Failed', last_error: 'result refused: $[1] is undefined' })
  t.match(await failed('odd-key'), { status: 'Failed', last_error: 'result refused: $["a b"]["c\\u0000"] is NaN' })
  t.match(await failed('cycle'), { status: 'Failed', last_error: 'result refused: $.parent.children[0] is a cycle (it refers back to $)' })
  t.match(await failed('large'), { status: 'Failed', attempts: 1, last_error: 'result refused: 65547 bytes of JSON, more than the 65536 allowed' })
  t.match(await failed('accented'), { status: 'Failed', last_error: 'result refused: 66002 bytes of JSON, more than the 65536 allowed' })
  t.match(await store.get('just-fits'), { status: 'Completed', result: `"${'x'.repeat(64 * 1024 - 2)}"` })
  t.match(await store.get('undefined-property'), { status: 'Completed', result: '{"b":1,"when":"1970-01-01T00:00:00.000Z"}' })
})

t.test('an attempt past its deadline fails, retryable, and its signal aborts; what it does later is ignored', async (t) => {
  const signals: AbortSignal[] = []
  let lateReturn!: () => void
  const late = new Promise<void>((resolve) => { lateReturn = resolve })
  const { store, processor } = setup(t, {
    attemptTimeoutMs: 100,
    // Claimable again only after this: the next claim may run beside the settle, and the order as
    // retried is read before it.
    retryBackoffMs: 1000,
    work: async (_claim, { signal, attempt }) => {
      signals.push(signal)
      if (attempt === 1) {
        // Ignores its signal, and returns once the order has been retried.
        await late
        return 'late'
      }
      return 'on time'
    }
  })
  const retried: Array<Promise<OrderRecord | undefined>> = []
  store.onChanges((changes) => { for (const c of changes) if (c.attempts === 1) retried.push(store.get(c.order_id)) }, ['Pending'])
  await store.create(anOrder('slow'), Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await statusOf(store, 'slow')) === 'Completed', 'completed on the second attempt')
  t.match(await retried[0], { status: 'Pending', attempts: 1, last_error: 'attempt timed out after 100 ms' }, 'the first attempt failed at its deadline, to be retried')
  t.match(await store.get('slow'), { attempts: 2, result: '"on time"', last_error: null })
  t.equal(signals[0]!.aborted, true, 'the first attempt\'s signal was aborted')
  t.match(signals[0]!.reason, { name: 'TimeoutError', message: 'attempt timed out after 100 ms' })
  t.equal(signals[1]!.aborted, false)
  lateReturn()
  await processor.stop(1000)
  t.match(await store.get('slow'), { attempts: 2, result: '"on time"' }, 'the late return changed nothing')
})

t.test('at stop, attempts still running after the grace period are aborted through their signals and handed back uncounted', async (t) => {
  const reasons: unknown[] = []
  let ignoring = 0
  const { store, processor } = setup(t, {
    work: async (claim, { signal }) => {
      if (claim.order_id === 'ignores') {
        ignoring++
        return new Promise(() => {})
      }
      // Waits on its signal, and fails when it aborts (as fetch does).
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => { reasons.push(signal.reason); reject(signal.reason) }))
    }
  })
  await store.createMany([anOrder('honours'), anOrder('ignores')], Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Processing === 2 && ignoring === 1, 'both running')
  await processor.stop(50)
  t.match(reasons, [{ name: 'AbortError', message: 'the service is shutting down' }], 'the attempt that waits on its signal saw it abort')
  t.match(await store.get('honours'), { status: 'Pending', attempts: 0, last_error: null }, 'handed back, not failed')
  t.match(await store.get('ignores'), { status: 'Pending', attempts: 0, last_error: null })
  t.same(await store.stats(), await recount(store))
})

t.test('the leases of running attempts are renewed, so that no other process takes them over', async (t) => {
  const gate = gatedWork()
  const { store, processor } = setup(t, { leaseMs: 600, work: gate.work })
  let renewals = 0
  const extendLeases = store.extendLeases.bind(store)
  store.extendLeases = async (...args) => { renewals++; return extendLeases(...args) }
  await store.create(anOrder('long'), Date.now(), Date.now())
  processor.start()
  await waitFor(() => gate.started.length === 1, 'the attempt to start')
  const startedAt = Date.now()
  // Another process looks for expired leases meanwhile (holding no claims of its own), for four leases' time.
  const takenOver = await waitFor(async () => {
    if (await store.recoverExpired(Date.now(), 3, []) > 0) return 'taken over'
    return Date.now() - startedAt > 4 * 600 && 'kept'
  }, 'four leases to pass')
  t.equal(takenOver, 'kept')
  // Leases long enough that a loaded CI machine's pauses (100 ms and more) do not end one.
  t.ok(renewals >= 8, `renewed every 200 ms (${renewals} renewals)`)
  gate.openAll()
  await waitFor(async () => (await statusOf(store, 'long')) === 'Completed', 'completion')
  t.match(await store.get('long'), { attempts: 1 }, 'completed on its only attempt')
})

t.test('an attempt that ignores its signal past its deadline keeps its place until it returns: no claim waits behind it', async (t) => {
  let ignoredUntil = Infinity
  const { store, processor } = setup(t, {
    concurrency: 1,
    attemptTimeoutMs: 50,
    work: async (claim, { attempt }) => {
      if (claim.order_id !== 'stubborn' || attempt > 1) return
      await sleep(300) // ignores its signal
      ignoredUntil = Date.now()
    }
  })
  const claimedAt = new Map<string, number>()
  store.onChanges((changes) => { for (const c of changes) claimedAt.set(`${c.order_id}:${c.attempts}`, c.at) }, ['Processing'])
  await store.createMany([anOrder('stubborn'), anOrder('next')], Date.now(), Date.now())
  processor.start()
  await waitFor(async () => (await store.stats()).counts.Completed === 2, 'both completed')
  t.match(await store.get('stubborn'), { attempts: 2, last_error: null })
  // Timers may fire a little early by the wall clock: the margin only needs to dwarf the 50 ms deadline.
  t.ok(claimedAt.get('stubborn:1')! + 200 <= ignoredUntil, `the first attempt ran on well past its 50 ms deadline (${ignoredUntil - claimedAt.get('stubborn:1')!} ms)`)
  t.ok(claimedAt.get('next:1')! >= ignoredUntil, 'the next order was claimed only once it returned')
  t.ok(claimedAt.get('stubborn:2')! >= ignoredUntil, 'and so was the retry')
})
