import type { Test } from 'tap'
import { ORDER_STATUSES, stageDurations, toOrder, type OrderRecord, type OrderStatus } from '../../src/order.ts'
import { PAGE_BYTES } from '../../src/store/page-size.ts'
import type { OrderStats, OrderStore } from '../../src/store/order-store.ts'
import { anOrder, waitFor } from '../helper.ts'

const T0 = 1_700_000_000_000
const LEASE = 30_000
/** A lease that ends while a test waits: leases may run by the store's own clock, not the caller's. */
const SHORT_LEASE = 50

/**
 * Recovers expired claims as soon as there are any: at once when the store goes by the caller's
 * clock (`now` is past every short lease), after SHORT_LEASE when it has a clock of its own.
 */
async function recoverOnceExpired (store: OrderStore, now: number, maxAttempts: number, heldTokens: string[] = []): Promise<number> {
  return waitFor(async () => {
    const recovered = await store.recoverExpired(now, maxAttempts, heldTokens)
    return recovered > 0 && recovered
  }, 'a lease to end')
}

export async function allOrders (store: OrderStore): Promise<OrderRecord[]> {
  const all: OrderRecord[] = []
  let after: number | undefined
  for (;;) {
    const page = await store.list({ limit: 1000, after })
    all.push(...page.orders)
    if (page.lastSeq === null) return all
    after = page.lastSeq
  }
}

/** The aggregates recomputed from the orders themselves. */
export async function recount (store: OrderStore): Promise<OrderStats> {
  const orders = await allOrders(store)
  const counts = Object.fromEntries(ORDER_STATUSES.map((s) => [s, 0])) as Record<OrderStatus, number>
  const stats = { counts, started: 0, pendingMs: 0, processingMs: 0, totalMs: 0 }
  for (const o of orders) {
    counts[o.status]++
    const { pending, processing, total } = stageDurations(o, o.completed_at)
    if (pending !== null) {
      stats.started++
      stats.pendingMs += pending
    }
    if (o.status === 'Completed') {
      stats.processingMs += processing ?? 0
      stats.totalMs += total ?? 0
    }
  }
  return stats
}

/** A store of its own for one test, opened by `open` and closed when the test ends. */
export function freshStore (open: () => Promise<OrderStore>): (t: Test) => Promise<OrderStore> {
  return async (t) => {
    const store = await open()
    t.teardown(() => store.close())
    return store
  }
}

/** What every OrderStore must do; run against each store by its own test file. */
export function storeContract (t: Test, open: () => Promise<OrderStore>): void {
  const fresh = freshStore(open)

  t.test('create is idempotent for the same body and refuses a different one', async (t) => {
    const store = await fresh(t)
    t.equal(await store.create(anOrder('A'), T0, T0), 'created')
    t.equal(await store.create(anOrder('A'), T0 + 5, T0 + 5), 'exists')
    t.equal(await store.create(anOrder('A', { total_amount: 60 }), T0, T0), 'conflict')
    t.equal(await store.create(anOrder('A', { item_ids: [103, 102, 101] }), T0, T0), 'conflict')
    t.equal(await store.create(anOrder('A', { user_id: 2 }), T0, T0), 'conflict')
    const record = await store.get('A')
    t.match(record, {
      order_id: 'A',
      user_id: 1,
      item_ids: [101, 102, 103],
      total_cents: 5999,
      status: 'Pending',
      created_at: T0,
      updated_at: T0,
      processing_started_at: null,
      completed_at: null,
      attempts: 0,
      last_error: null
    })
    t.equal(await store.get('missing'), undefined)
    t.equal((await store.stats()).counts.Pending, 1)
  })

  t.test('amounts are kept exactly in cents, up to 10^13', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('big', { total_amount: 9999999999999.99 }), T0, T0)
    await store.create(anOrder('small', { total_amount: 0.07 }), T0, T0)
    t.equal((await store.get('big'))?.total_cents, 999999999999999)
    t.equal((await store.get('small'))?.total_cents, 7)
  })

  t.test('claims only available Pending orders, oldest first, up to the limit', async (t) => {
    const store = await fresh(t)
    const woken: number[] = []
    store.onWork((at) => woken.push(at))
    await store.create(anOrder('later'), T0, T0 + 2000)
    await store.create(anOrder('first'), T0, T0)
    await store.create(anOrder('second'), T0 + 1, T0 + 1)
    await waitFor(() => woken.length === 3, 'three announcements')
    t.same(woken, [T0 + 2000, T0, T0 + 1], 'each create tells when its order becomes claimable')
    t.equal(await store.nextAvailableAt(), T0)
    const claims = await store.claim(10, T0 + 1, LEASE)
    t.same(claims.map((c) => c.order_id), ['first', 'second'])
    t.same(claims.map((c) => c.attempts), [1, 1])
    t.same(await store.claim(10, T0 + 1, LEASE), [], 'claimed orders are not claimed again')
    t.equal(await store.nextAvailableAt(), T0 + 2000)
    t.same((await store.claim(1, T0 + 2000, LEASE)).map((c) => c.order_id), ['later'])
    t.equal(await store.nextAvailableAt(), null, 'then none')
    const first = await store.get('first')
    t.match(first, { status: 'Processing', processing_started_at: T0 + 1, attempts: 1 })
    const stats = await store.stats()
    t.same(stats.counts, { Pending: 0, Processing: 3, Completed: 0, Failed: 0, Cancelled: 0 })
    t.same(stats, await recount(store))
  })

  t.test('settling completes with the claim token only', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    const [claim] = await store.claim(1, T0 + 100, LEASE)
    t.ok(claim)
    const stale = { ...claim!, token: 'not-the-token' }
    t.equal(await store.settle([{ claim: stale, ok: true }], T0 + 200), 0, 'a wrong token changes nothing')
    t.equal((await store.get('A'))?.status, 'Processing')
    t.equal(await store.settle([{ claim: claim!, ok: true }], T0 + 300), 1)
    t.match(await store.get('A'), { status: 'Completed', completed_at: T0 + 300, processing_started_at: T0 + 100 })
    t.equal(await store.settle([{ claim: claim!, ok: true }], T0 + 400), 0, 'completing twice is a no-op')
    const stats = await store.stats()
    t.match(stats, { started: 1, pendingMs: 100, processingMs: 200, totalMs: 300 })
    t.same(stats, await recount(store))
  })

  t.test('a stale worker cannot complete an order that was taken over', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    const [old] = await store.claim(1, T0, SHORT_LEASE)
    t.equal(await recoverOnceExpired(store, T0 + LEASE, 3), 1)
    t.match(await store.get('A'), { status: 'Pending', last_error: 'lease expired', attempts: 1 })
    const [fresh2] = await store.claim(1, T0 + LEASE, LEASE)
    t.equal(fresh2?.attempts, 2)
    t.not(fresh2?.token, old?.token)
    t.equal(await store.settle([{ claim: old!, ok: true }], T0 + 103), 0, 'the old claim is void')
    t.equal(await store.settle([{ claim: old!, ok: false, error: 'x', retryAt: null }], T0 + 103), 0)
    t.equal((await store.get('A'))?.status, 'Processing')
    t.equal(await store.settle([{ claim: fresh2!, ok: true }], T0 + 104), 1)
    const stats = await store.stats()
    t.equal(stats.started, 1, 'an order starts once however often it is claimed')
    t.same(stats, await recount(store))
  })

  t.test('a lease that has not ended is not taken over', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    const [claim] = await store.claim(1, T0, LEASE)
    t.equal(await store.recoverExpired(T0 + 50, 1, []), 0)
    t.match(await store.get('A'), { status: 'Processing', attempts: 1 })
    t.equal(await store.settle([{ claim: claim!, ok: true }], T0 + 60), 1)
  })

  t.test('recovery never takes a claim whose token the caller still holds, however long ago its lease ended', async (t) => {
    const store = await fresh(t)
    await store.createMany([anOrder('mine'), anOrder('theirs')], T0, T0)
    const [mine] = await store.claim(1, T0, SHORT_LEASE)
    const [theirs] = await store.claim(1, T0, SHORT_LEASE)
    t.not(mine!.token, theirs!.token)
    t.equal(await recoverOnceExpired(store, T0 + LEASE, 3, [mine!.token]), 1, 'only the claim not held')
    t.match(await store.get('theirs'), { status: 'Pending', last_error: 'lease expired' })
    t.equal(await store.recoverExpired(T0 + LEASE, 1, [mine!.token]), 0, 'nor is a held claim failed on its last attempt')
    t.match(await store.get('mine'), { status: 'Processing', attempts: 1 })
    t.equal(await store.settle([{ claim: mine!, ok: true }], T0 + LEASE + 1), 1, 'its holder completes it')
    t.match(await store.get('mine'), { status: 'Completed', attempts: 1 })
    t.same(await store.stats(), await recount(store))
  })

  t.test('renewing leases keeps live claims from being taken over, and renews nothing else', async (t) => {
    const store = await fresh(t)
    await store.createMany([anOrder('kept'), anOrder('lapsed'), anOrder('done')], T0, T0)
    const [kept, lapsed, done] = await store.claim(3, T0, SHORT_LEASE)
    t.equal(await store.settle([{ claim: done!, ok: true }], T0 + 1), 1)
    const stale = { ...lapsed!, token: 'not-the-token' }
    t.same(await store.extendLeases([kept!, stale, done!], T0 + 1, LEASE), [stale, done], 'only the current claim of an order still Processing; the others are told lost')
    t.equal(await recoverOnceExpired(store, T0 + SHORT_LEASE + 1, 3), 1, 'the lease not renewed ends')
    t.match(await store.get('lapsed'), { status: 'Pending', last_error: 'lease expired' })
    t.match(await store.get('kept'), { status: 'Processing', attempts: 1 }, 'the renewed one is still claimed')
    t.equal(await store.recoverExpired(T0 + SHORT_LEASE + 1, 3, []), 0)
    t.same(await store.extendLeases([], T0 + 2, LEASE), [], 'renewing nothing')
    t.equal(await store.settle([{ claim: kept!, ok: true }], T0 + 3), 1, 'its holder completes it')
    t.same(await store.stats(), await recount(store))
  })

  t.test('a claim brings its order as stored once claimed when asked for; a completion keeps the result', async (t) => {
    const store = await fresh(t)
    await store.createMany([anOrder('A', { item_ids: [7, 8] }), anOrder('B'), anOrder('C')], T0, T0)
    const [bare] = await store.claim(1, T0 + 5, LEASE)
    t.same(bare, { order_id: 'A', token: bare!.token, attempts: 1 }, 'without orders by default')
    const [withOrder, other] = await store.claim(2, T0 + 10, LEASE, true)
    t.same(withOrder!.order, await store.get('B'), 'the order as get() reads it')
    t.match(withOrder!.order, { order_id: 'B', status: 'Processing', attempts: 1, processing_started_at: T0 + 10, item_ids: [101, 102, 103], result: null })
    const result = JSON.stringify({ tracking_id: 'TRK-1', zeta: 1, alpha: [1.5, 'é', null] })
    t.equal(await store.settle([
      { claim: bare!, ok: true, result },
      { claim: withOrder!, ok: true },
      { claim: other!, ok: false, error: 'no', retryAt: null }
    ], T0 + 20), 3)
    t.match(await store.get('A'), { status: 'Completed', result }, 'kept as written, key order and all')
    t.match(await store.get('B'), { status: 'Completed', result: null }, 'none')
    t.match(await store.get('C'), { status: 'Failed', result: null })
    t.same((await store.list({ limit: 10, status: 'Completed' })).orders.map((o) => o.result), [result, null], 'lists show it too')
    t.same(await store.stats(), await recount(store))
  })

  t.test('a page of orders with large results ends before 1 MiB of JSON', async (t) => {
    const store = await fresh(t)
    const ids = Array.from({ length: 40 }, (_, i) => `res${i}`)
    await store.createMany(ids.map((id) => anOrder(id)), T0, T0)
    const claims = await store.claim(40, T0, LEASE)
    // 60 KiB of JSON each: 40 of them would be 2.4 MB.
    const result = JSON.stringify({ note: 'x'.repeat(60 * 1024) })
    await store.settle(claims.map((claim) => ({ claim, ok: true, result })), T0 + 1)
    const listed: string[] = []
    let after: number | undefined
    for (;;) {
      const page = await store.list({ limit: 1000, after })
      const bytes = JSON.stringify(page.orders.map(toOrder)).length
      t.ok(page.orders.length > 0 && bytes <= PAGE_BYTES, `a page of ${page.orders.length} orders, ${bytes} bytes`)
      listed.push(...page.orders.map((o) => o.order_id))
      if (page.lastSeq === null) break
      after = page.lastSeq
    }
    t.same(listed, ids, 'every order once, in order')
  })

  t.test('an expired lease on the last attempt fails the order', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    await store.claim(1, T0, SHORT_LEASE)
    t.equal(await recoverOnceExpired(store, T0 + LEASE, 1), 1)
    t.match(await store.get('A'), { status: 'Failed', last_error: 'lease expired on the last attempt' })
    t.same(await store.stats(), await recount(store))
  })

  t.test('failures retry later, then fail for good', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    const [c1] = await store.claim(1, T0, LEASE)
    t.equal(await store.settle([{ claim: c1!, ok: false, error: 'boom', retryAt: T0 + 1000 }], T0 + 10), 1)
    t.match(await store.get('A'), { status: 'Pending', last_error: 'boom', attempts: 1 })
    t.same(await store.claim(1, T0 + 999, LEASE), [], 'not before the backoff')
    const [c2] = await store.claim(1, T0 + 1000, LEASE)
    t.equal(c2?.attempts, 2)
    t.equal(await store.settle([{ claim: c2!, ok: false, error: 'boom again', retryAt: null }], T0 + 1010), 1)
    t.match(await store.get('A'), { status: 'Failed', last_error: 'boom again', attempts: 2, completed_at: null })
    t.same(await store.stats(), await recount(store))
  })

  // A store may keep orders it has read (SQLite does): each change must reach the next read.
  t.test('get returns each order as it is after every kind of change, read before and after', async (t) => {
    const store = await fresh(t)
    const status = async (id: string) => (await store.get(id))?.status
    for (const id of ['A', 'B', 'C', 'D']) await store.create(anOrder(id), T0, T0)
    t.equal(await status('D'), 'Pending')
    await store.cancel('D', T0 + 1)
    t.equal(await status('D'), 'Cancelled', 'cancelled')
    for (const id of ['A', 'B', 'C']) t.equal(await status(id), 'Pending')
    const claims = await store.claim(3, T0 + 2, LEASE)
    for (const id of ['A', 'B', 'C']) t.equal(await status(id), 'Processing', `${id} claimed`)
    const [a, b, c] = ['A', 'B', 'C'].map((id) => claims.find((claim) => claim.order_id === id)!)
    await store.settle([{ claim: a!, ok: true }, { claim: b!, ok: false, error: 'again', retryAt: T0 + 3 }, { claim: c!, ok: false, error: 'no', retryAt: null }], T0 + 3)
    t.match(await store.get('A'), { status: 'Completed', completed_at: T0 + 3 }, 'completed')
    t.match(await store.get('B'), { status: 'Pending', last_error: 'again' }, 'retried later')
    t.match(await store.get('C'), { status: 'Failed', last_error: 'no' }, 'failed')
    const [again] = await store.claim(1, T0 + 4, LEASE)
    t.match(await store.get('B'), { status: 'Processing', attempts: 2 }, 'claimed again')
    await store.release([again!], T0 + 5)
    t.match(await store.get('B'), { status: 'Pending', attempts: 1 }, 'handed back')
    await store.claim(1, T0 + 6, SHORT_LEASE)
    t.equal(await status('B'), 'Processing')
    t.equal(await waitFor(async () => await store.recoverExpired(T0 + LEASE, 3, []) || false, 'the short lease to end'), 1)
    t.match(await store.get('B'), { status: 'Pending', last_error: 'lease expired' }, 'recovered')
    await store.retry('C', T0 + 7)
    t.match(await store.get('C'), { status: 'Pending', attempts: 0 }, 'retried by hand')
  })

  t.test('cancel takes Pending orders only, and cancelled orders are never claimed', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('P'), T0, T0)
    await store.create(anOrder('Q'), T0, T0 + 5000)
    const cancelled = await store.cancel('Q', T0 + 1)
    t.equal(cancelled.cancelled, true)
    t.match(cancelled.order, { status: 'Cancelled', updated_at: T0 + 1 })
    const [claim] = await store.claim(10, T0 + 5000, LEASE)
    t.equal(claim?.order_id, 'P', 'only the uncancelled order is claimed')
    const late = await store.cancel('P', T0 + 2)
    t.equal(late.cancelled, false)
    t.equal(late.order?.status, 'Processing')
    t.same(await store.cancel('nope', T0), { cancelled: false, order: undefined })
    t.same(await store.cancel('Q', T0 + 3).then((r) => r.cancelled), false, 'cancelling twice changes nothing')
    t.same(await store.stats(), await recount(store))
  })

  t.test('release hands claims back at once', async (t) => {
    const store = await fresh(t)
    await store.create(anOrder('A'), T0, T0)
    await store.create(anOrder('B'), T0, T0)
    const claims = await store.claim(2, T0, LEASE)
    t.equal(await store.release(claims, T0 + 5), 2)
    t.match(await store.get('A'), { status: 'Pending', attempts: 0, processing_started_at: null }, 'as if never claimed')
    t.same(await store.stats(), await recount(store))
    t.equal(await store.release(claims, T0 + 6), 0, 'releasing twice is a no-op')
    const again = await store.claim(5, T0 + 5, SHORT_LEASE)
    t.same(again.map((c) => c.attempts), [1, 1], 'a handed-back claim does not use up an attempt')
    t.equal(await recoverOnceExpired(store, T0 + LEASE + 1, 3), 2)
    const [third] = await store.claim(1, T0 + LEASE + 2, LEASE)
    t.equal(await store.release([third!], T0 + LEASE + 3), 1)
    t.match(await store.get(third!.order_id), { attempts: 1, processing_started_at: T0 + 5 }, 'a later hand-back keeps the first start')
    t.same(await store.stats(), await recount(store))
  })

  t.test('retry sends a Failed order back to Pending for a fresh run, at once; any other status is left alone', async (t) => {
    const store = await fresh(t)
    const woken: number[] = []
    store.onWork((at) => woken.push(at))
    const seen: string[] = []
    store.onChanges((changes) => { for (const c of changes) seen.push(`${c.order_id}:${c.status}:${c.attempts}:${c.processing_started_at}`) })
    await store.create(anOrder('A'), T0, T0)
    const [first] = await store.claim(1, T0 + 10, LEASE)
    await store.settle([{ claim: first!, ok: false, error: 'boom', retryAt: null }], T0 + 20)
    t.match(await store.stats(), { started: 1, pendingMs: 10 })

    const retried = await store.retry('A', T0 + 5000)
    t.equal(retried.retried, true)
    t.match(retried.order, {
      status: 'Pending', attempts: 0, processing_started_at: null, completed_at: null, last_error: 'boom', updated_at: T0 + 5000, created_at: T0
    }, 'a fresh run, the last error kept until the next outcome')
    t.same(await store.get('A'), retried.order)
    t.match(await store.stats(), { started: 0, pendingMs: 0 }, 'the failed run no longer counts as started')
    t.same(await store.stats(), await recount(store))
    await waitFor(() => woken.includes(T0 + 5000), 'the retry to wake processors')

    const [second] = await store.claim(5, T0 + 5000, LEASE)
    t.match(second, { order_id: 'A', attempts: 1 }, 'claimable at once, on a first attempt again')
    for (const status of ['Processing', 'Completed']) {
      const refused = await store.retry('A', T0 + 5001)
      t.equal(refused.retried, false, `${status}: not retried`)
      t.match(refused.order, { status, attempts: 1 })
      if (status === 'Processing') await store.settle([{ claim: second!, ok: true }], T0 + 5100)
    }
    t.match(await store.get('A'), { status: 'Completed', last_error: null, processing_started_at: T0 + 5000, completed_at: T0 + 5100 })
    t.match(await store.stats(), { started: 1, pendingMs: 5000, processingMs: 100, totalMs: 5100 }, 'the second run counts from creation')
    t.same(await store.stats(), await recount(store))
    t.same(await store.retry('nope', T0), { retried: false, order: undefined })
    await waitFor(() => seen.length === 6, 'six changes')
    t.same(seen, [
      'A:Pending:0:null', `A:Processing:1:${T0 + 10}`, `A:Failed:1:${T0 + 10}`, 'A:Pending:0:null', `A:Processing:1:${T0 + 5000}`, `A:Completed:1:${T0 + 5000}`
    ], 'the retry is announced as a new order\'s')
  })

  t.test('retryFailed retries the oldest Failed orders, a chunk per call, each call going on from where the last ended', async (t) => {
    const store = await fresh(t)
    const ids = ['f1', 'ok2', 'f3', 'f4', 'ok5', 'f6']
    await store.createMany(ids.map((id) => anOrder(id)), T0, T0)
    await store.create(anOrder('waiting'), T0, T0 + 60_000)
    const claims = await store.claim(10, T0 + 1, LEASE)
    await store.settle(claims.map((claim) => claim.order_id.startsWith('ok')
      ? { claim, ok: true as const }
      : { claim, ok: false as const, error: 'boom', retryAt: null }), T0 + 2)
    t.equal((await store.stats()).counts.Failed, 4)

    const first = await store.retryFailed(2, T0 + 3)
    t.equal(first.retried, 2)
    t.not(first.lastSeq, null, 'more may follow')
    t.same(await Promise.all(ids.map(async (id) => (await store.get(id))?.status)), ['Pending', 'Completed', 'Pending', 'Failed', 'Completed', 'Failed'])
    t.match(await store.get('f1'), { attempts: 0, processing_started_at: null, last_error: 'boom', updated_at: T0 + 3 })
    t.same(await store.stats(), await recount(store))
    t.same(await store.retryFailed(5, T0 + 4, first.lastSeq!), { retried: 2, lastSeq: null }, 'the rest, and no more')
    t.same(await store.retryFailed(5, T0 + 5), { retried: 0, lastSeq: null }, 'none left')
    t.equal((await store.stats()).counts.Failed, 0)
    t.same(await store.stats(), await recount(store))
    const again = await store.claim(10, T0 + 5, LEASE)
    t.same(again.map((c) => c.order_id).sort(), ['f1', 'f3', 'f4', 'f6'], 'every retried order is claimable at once; the waiting one is not')
  })

  t.test('createEach creates a batch in one transaction with a result per order, as create would', async (t) => {
    const store = await fresh(t)
    let woken = 0
    store.onWork(() => { woken++ })
    await store.create(anOrder('old'), T0, T0)
    const results = await store.createEach([
      anOrder('new'), anOrder('old'), anOrder('old', { total_amount: 1 }), anOrder('twice'), anOrder('twice'), anOrder('twice', { user_id: 9 }), anOrder('last')
    ], T0 + 1, T0 + 2)
    t.same(results, ['created', 'exists', 'conflict', 'created', 'exists', 'conflict', 'created'])
    t.match(await store.get('twice'), { user_id: 1, created_at: T0 + 1 }, 'the first of an id given twice is the one kept')
    t.match(await store.get('old'), { total_cents: 5999, created_at: T0 }, 'an existing order is left as it was')
    t.same(await store.stats(), await recount(store))
    t.equal((await store.stats()).counts.Pending, 4)
    await waitFor(() => woken === 2, 'the batch\'s wake-up')
    t.same(await store.createEach([anOrder('new'), anOrder('last', { item_ids: [1] })], T0 + 3, T0 + 3), ['exists', 'conflict'], 'a batch that creates nothing')
    t.equal((await store.stats()).counts.Pending, 4)
  })

  t.test('pausing stops claims until resumed; setting the state it has changes nothing', async (t) => {
    const store = await fresh(t)
    const heard: string[] = []
    store.onProcessingState(({ state, since }) => heard.push(`${state} ${since}`))
    const initial = await store.processingState()
    t.equal(initial.state, 'running', 'a new store runs')
    t.ok(Number.isSafeInteger(initial.since), 'since it was made')
    t.same(await store.overview(), { stats: await recount(store), processing: initial }, 'the overview of an empty store')
    t.same(await store.setProcessingState('running', () => T0), initial, 'resuming a running store changes nothing')

    await store.create(anOrder('A'), T0, T0)
    t.same(await store.setProcessingState('paused', () => T0 + 1), { state: 'paused', since: T0 + 1 })
    t.same(await store.setProcessingState('paused', () => T0 + 2), { state: 'paused', since: T0 + 1 }, 'pausing again changes nothing')
    t.same(await store.processingState(), { state: 'paused', since: T0 + 1 })
    t.same(await store.overview(), { stats: await store.stats(), processing: { state: 'paused', since: T0 + 1 } }, 'the overview: aggregates and state')
    t.same(await store.claim(10, T0 + 3, LEASE), [], 'a claim takes nothing while paused')
    t.equal(await store.create(anOrder('B'), T0 + 3, T0 + 3), 'created', 'orders are still taken')
    t.equal(await store.nextAvailableAt(), T0, 'and wait')
    t.same(await store.setProcessingState('running', () => T0 + 4), { state: 'running', since: T0 + 4 })
    t.same((await store.claim(10, T0 + 5, LEASE)).map((c) => c.order_id), ['A', 'B'], 'resumed, the waiting orders are claimed')
    await waitFor(() => heard.length === 2, 'both changes announced')
    t.same(heard, [`paused ${T0 + 1}`, `running ${T0 + 4}`], 'only changes are announced')
  })

  t.test('list pages by keyset, filters, and stays stable while orders are added', async (t) => {
    const store = await fresh(t)
    for (let i = 1; i <= 7; i++) await store.create(anOrder(`o${i}`, { user_id: i % 2 }), T0 + i, T0 + i)
    const first = await store.list({ limit: 3 })
    t.same(first.orders.map((o) => o.order_id), ['o1', 'o2', 'o3'])
    t.not(first.lastSeq, null)
    await store.create(anOrder('o8', { user_id: 0 }), T0 + 8, T0 + 8)
    const second = await store.list({ limit: 3, after: first.lastSeq! })
    t.same(second.orders.map((o) => o.order_id), ['o4', 'o5', 'o6'])
    const third = await store.list({ limit: 3, after: second.lastSeq! })
    t.same(third.orders.map((o) => o.order_id), ['o7', 'o8'])
    t.equal(third.lastSeq, null)
    const exact = await store.list({ limit: 8 })
    t.equal(exact.lastSeq, null, 'no next page when the page ends exactly at the last order')
    t.same((await store.list({ limit: 10, userId: 1 })).orders.map((o) => o.order_id), ['o1', 'o3', 'o5', 'o7'])
    await store.cancel('o2', T0 + 9)
    t.same((await store.list({ limit: 10, status: 'Cancelled' })).orders.map((o) => o.order_id), ['o2'])
    t.same((await store.list({ limit: 10, status: 'Pending', userId: 0 })).orders.map((o) => o.order_id), ['o4', 'o6', 'o8'])
  })

  t.test('list pages newest first by keyset, with every filter, and goes on to older orders while new ones are added', async (t) => {
    const store = await fresh(t)
    for (let i = 1; i <= 7; i++) await store.create(anOrder(`o${i}`, { user_id: i % 2 }), T0 + i, T0 + i)
    await store.cancel('o2', T0 + 8)
    const ids = (page: { orders: OrderRecord[] }) => page.orders.map((o) => o.order_id)
    const first = await store.list({ limit: 3, order: 'desc' })
    t.same(ids(first), ['o7', 'o6', 'o5'])
    t.equal(first.lastSeq, first.orders.at(-1)?.seq, 'the next page starts after the last order listed')
    await store.create(anOrder('o8', { user_id: 0 }), T0 + 9, T0 + 9)
    const second = await store.list({ limit: 3, order: 'desc', after: first.lastSeq! })
    t.same(ids(second), ['o4', 'o3', 'o2'], 'an order added meanwhile does not shift the pages after the first')
    const third = await store.list({ limit: 3, order: 'desc', after: second.lastSeq! })
    t.same(ids(third), ['o1'])
    t.equal(third.lastSeq, null)
    t.same(ids(await store.list({ limit: 3, order: 'desc' })), ['o8', 'o7', 'o6'], 'a fresh first page shows it')
    t.equal((await store.list({ limit: 8, order: 'desc' })).lastSeq, null, 'no next page when the page ends exactly at the first order')
    t.same(ids(await store.list({ limit: 10, order: 'desc', userId: 1 })), ['o7', 'o5', 'o3', 'o1'])
    t.same(ids(await store.list({ limit: 10, order: 'desc', status: 'Pending' })), ['o8', 'o7', 'o6', 'o5', 'o4', 'o3', 'o1'])
    const byBoth = await store.list({ limit: 2, order: 'desc', status: 'Pending', userId: 0 })
    t.same(ids(byBoth), ['o8', 'o6'])
    t.same(await store.list({ limit: 2, order: 'desc', status: 'Pending', userId: 0, after: byBoth.lastSeq! }).then(ids), ['o4'])
    t.same(ids(await store.list({ limit: 10, order: 'desc', status: 'Cancelled', userId: 0 })), ['o2'])
    t.same(ids(await store.list({ limit: 10, order: 'desc', status: 'Failed' })), [])
    t.same(ids(await store.list({ limit: 10, order: 'asc', after: first.lastSeq! })), ['o6', 'o7', 'o8'],
      'a position read oldest first lists what follows it that way')
  })

  t.test('a page of big orders ends before 1 MiB of JSON, and the next one goes on from there', async (t) => {
    const store = await fresh(t)
    // 1,000 item ids of 16 digits: ~17 KB of JSON an order, so 1,000 of them would be ~17 MB.
    const itemIds = Array.from({ length: 1000 }, (_, i) => Number.MAX_SAFE_INTEGER - i)
    const ids = Array.from({ length: 150 }, (_, i) => `big${i}`)
    await store.createMany(ids.map((id, i) => anOrder(id, { item_ids: itemIds, user_id: i % 3 === 0 ? 7 : 8 })), T0, T0)
    await store.cancel('big149', T0 + 1)
    const filters = [{}, { status: 'Pending' as const }, { userId: 8 }, { status: 'Pending' as const, userId: 8 }]
    for (const filter of (['asc', 'desc'] as const).flatMap((order) => filters.map((f) => ({ ...f, order })))) {
      const matching = ids.filter((id, i) => (filter.userId === undefined || filter.userId === (i % 3 === 0 ? 7 : 8)) &&
        (filter.status === undefined || id !== 'big149'))
      const wanted = filter.order === 'asc' ? matching : matching.toReversed()
      const listed: string[] = []
      let after: number | undefined
      let pages = 0
      for (;;) {
        const page = await store.list({ ...filter, limit: 1000, after })
        pages++
        const bytes = JSON.stringify(page.orders.map(toOrder)).length
        t.ok(page.orders.length > 0 && bytes <= PAGE_BYTES, `${JSON.stringify(filter)}: page ${pages} holds ${page.orders.length} orders, ${bytes} bytes`)
        listed.push(...page.orders.map((o) => o.order_id))
        if (page.lastSeq === null) break
        t.equal(page.lastSeq, page.orders.at(-1)?.seq, 'the next page starts after the last order listed')
        after = page.lastSeq
      }
      t.same(listed, wanted, `${JSON.stringify(filter)}: every order once, in order, over ${pages} pages`)
      t.ok(pages > 1, 'cut into pages')
    }
  })

  t.test('idsByStatus lists oldest first up to a limit, page by page', async (t) => {
    const store = await fresh(t)
    for (let i = 1; i <= 5; i++) await store.create(anOrder(`o${i}`), T0, T0)
    await store.cancel('o2', T0)
    const first = await store.idsByStatus('Pending', 2)
    t.same(first.ids, ['o1', 'o3'])
    t.not(first.lastSeq, null)
    t.same(await store.idsByStatus('Pending', 2, first.lastSeq!), { ids: ['o4', 'o5'], lastSeq: null }, 'the rest, and no next page')
    t.same((await store.idsByStatus('Cancelled', 1)), { ids: ['o2'], lastSeq: null })
    t.same(await store.idsByStatus('Completed', 3), { ids: [], lastSeq: null })
  })

  t.test('createMany inserts in bulk and reports ids that existed', async (t) => {
    const store = await fresh(t)
    let woken = 0
    store.onWork(() => { woken++ })
    await store.create(anOrder('b2'), T0, T0)
    const existing = await store.createMany([anOrder('b1'), anOrder('b2'), anOrder('b3')], T0, T0 + 7)
    t.same(existing, ['b2'])
    await waitFor(() => woken === 2, 'both writes announced')
    t.equal((await store.stats()).counts.Pending, 3)
    t.same(await store.stats(), await recount(store))
  })

  // Wake-ups come in commit order (on PostgreSQL by NOTIFY): once a later write's has come, an
  // earlier one that was sent has come too.
  t.test('a settle that applies no outcome wakes no processor', async (t) => {
    const store = await fresh(t)
    const woken: number[] = []
    store.onWork((at) => woken.push(at))
    await store.create(anOrder('A'), T0, T0)
    const [claim] = await store.claim(1, T0, LEASE)
    const stale = { ...claim!, token: 'not-the-token' }
    t.equal(await store.settle([{ claim: stale, ok: false, error: 'x', retryAt: T0 + 500 }], T0 + 1), 0)
    await store.create(anOrder('marker'), T0, T0 + 777)
    await waitFor(() => woken.includes(T0 + 777), 'the next write\'s wake-up')
    t.same(woken, [T0, T0 + 777], 'no wake-up for a retry that was not applied')
  })

  t.test('a batch of creates wakes processors for the orders it created, not those that existed', async (t) => {
    const store = await fresh(t)
    const woken: number[] = []
    store.onWork((at) => woken.push(at))
    await store.create(anOrder('old'), T0, T0 + 1)
    // Together, so that they are committed in one batch.
    t.same(await Promise.all([store.create(anOrder('old'), T0, T0 + 1), store.create(anOrder('new'), T0, T0 + 5000)]), ['exists', 'created'])
    await store.create(anOrder('marker'), T0, T0 + 777)
    await waitFor(() => woken.includes(T0 + 777), 'the next write\'s wake-up')
    t.same(woken, [T0 + 1, T0 + 5000, T0 + 777], 'the batch wakes at its new order\'s time')
  })

  t.test('every status change is announced after it commits, in order', async (t) => {
    const store = await fresh(t)
    const seen: string[] = []
    store.onChanges((changes) => { for (const c of changes) seen.push(`${c.order_id}:${c.status}:${c.attempts}`) })
    await store.create(anOrder('A'), T0, T0)
    await store.createMany([anOrder('B'), anOrder('C')], T0, T0)
    const claims = await store.claim(2, T0 + 1, LEASE)
    await store.settle([{ claim: claims[0]!, ok: true }, { claim: claims[1]!, ok: false, error: 'x', retryAt: T0 + 5 }], T0 + 2)
    await store.cancel('C', T0 + 3)
    const [again] = await store.claim(1, T0 + 5, SHORT_LEASE)
    await recoverOnceExpired(store, T0 + LEASE, 2)
    await waitFor(() => seen.length === 10, 'ten changes')
    t.same(seen, [
      'A:Pending:0', 'B:Pending:0', 'C:Pending:0', 'A:Processing:1', 'B:Processing:1',
      'A:Completed:1', 'B:Pending:1', 'C:Cancelled:0', 'B:Processing:2', `${again!.order_id}:Failed:2`
    ])
  })

  t.test('a cursor key is made once per database', async (t) => {
    const store = await fresh(t)
    const key = await store.cursorKey()
    t.match(key, /^[0-9a-f]{64}$/)
    t.equal(await store.cursorKey(), key)
  })

  t.test('a populate batch records how far it got with each chunk, and moves only from where it is', async (t) => {
    const store = await fresh(t)
    const opened = await store.openBatch('x1', 5, T0)
    t.same(opened, { batch_id: 'x1', total_entries: 5, entries_done: 0, failure_count: 0, failed_ids: [] })
    await store.create(anOrder('sim_x1_2'), T0, T0)
    const first = await store.populateChunk(opened, ['sim_x1_1', 'sim_x1_2', 'sim_x1_3'].map((id) => anOrder(id)), T0, T0)
    t.same(first, { ...opened, entries_done: 3, failure_count: 1, failed_ids: ['sim_x1_2'] })
    t.same(await store.openBatch('x1', 9, T0 + 1), first, 'opening it again changes nothing and tells how far it got')
    await t.rejects(store.populateChunk(opened, [anOrder('sim_x1_4')], T0, T0), { name: 'BatchConflictError' }, 'a chunk from where it was is refused')
    t.equal(await store.get('sim_x1_4'), undefined, '...and created nothing')
    const rest = ['sim_x1_4', 'sim_x1_5'].map((id) => anOrder(id))
    const outcomes = await Promise.allSettled([store.populateChunk(first, rest, T0, T0), store.populateChunk(first, rest, T0, T0)])
    t.same(outcomes.map((o) => o.status).sort(), ['fulfilled', 'rejected'], 'of two calls moving it from the same place at once, one does')
    t.same(await store.openBatch('x1', 5, T0 + 2), { ...first, entries_done: 5 })
    t.same(await store.stats(), await recount(store))
  })

  t.test('aggregates equal a recount after a random mix of operations', async (t) => {
    const store = await fresh(t)
    let now = T0
    let seed = 42
    const random = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
    let retried = 0
    for (let i = 0; i < 300; i++) {
      now += 7
      const r = random()
      if (r < 0.35) await store.create(anOrder(`r${i}`), now, now + Math.floor(random() * 50))
      else if (r < 0.42) await store.cancel(`r${Math.floor(random() * i)}`, now)
      else if (r < 0.5) retried += Number((await store.retry(`r${Math.floor(random() * i)}`, now)).retried)
      else if (r < 0.52) retried += (await store.retryFailed(1 + Math.floor(random() * 3), now)).retried
      else if (r < 0.8) {
        const claims = await store.claim(1 + Math.floor(random() * 5), now, 40)
        const outcomes = claims.map((claim) => random() < 0.7
          ? { claim, ok: true as const }
          : { claim, ok: false as const, error: 'x', retryAt: random() < 0.5 ? now + 20 : null })
        if (random() < 0.8) await store.settle(outcomes, now + 3)
      } else await store.recoverExpired(now, 2, [])
    }
    const stats = await store.stats()
    t.same(stats, await recount(store))
    t.ok(retried > 0 && stats.counts.Failed > 0, `every path taken: ${retried} retried, ${JSON.stringify(stats.counts)}`)
  })
}
