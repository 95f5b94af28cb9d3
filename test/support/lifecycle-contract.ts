import type { Test } from 'tap'
import { freshStore } from './store-contract.ts'
import type { OrderStatus } from '../../src/order.ts'
import type { OrderStore } from '../../src/store/order-store.ts'
import type { DeliveryClaim } from '../../src/store/webhook-store.ts'
import { anOrder, waitFor } from '../helper.ts'
import { recount } from './store-contract.ts'
import { anEndpoint } from './webhook-store-contract.ts'

const T0 = 1_700_000_000_000
const LEASE = 30_000

/** Creates an order and takes it to `status` at `at` (its last update), one transaction per step. */
async function finished (store: OrderStore, orderId: string, status: 'Completed' | 'Failed' | 'Cancelled', at: number, userId = 1): Promise<void> {
  await store.create(anOrder(orderId, { user_id: userId }), at - 10, at - 10)
  if (status === 'Cancelled') {
    await store.cancel(orderId, at)
    return
  }
  const [claim] = await store.claim(1, at - 5, LEASE)
  if (claim?.order_id !== orderId) throw new Error(`claimed ${claim?.order_id} instead of ${orderId}`)
  await store.settle([status === 'Completed' ? { claim, ok: true } : { claim, ok: false, error: 'x', retryAt: null }], at)
}

async function statuses (store: OrderStore, ids: string[]): Promise<Array<OrderStatus | undefined>> {
  return Promise.all(ids.map(async (id) => (await store.get(id))?.status))
}

/** Retention and erasure, what every store must do; run against each store by its own test file. */
export function lifecycleContract (t: Test, open: () => Promise<OrderStore>): void {
  const fresh = freshStore(open)

  t.test('a sweep deletes the orders of one status finished before a time, oldest first, a batch at a time, and they leave the aggregates', async (t) => {
    const store = await fresh(t)
    await finished(store, 'c1', 'Completed', T0 + 100)
    await finished(store, 'c2', 'Completed', T0 + 200)
    await finished(store, 'c3', 'Completed', T0 + 300)
    await finished(store, 'x1', 'Cancelled', T0 + 100)
    await finished(store, 'f1', 'Failed', T0 + 100)
    await store.create(anOrder('p1'), T0, T0 + 1_000_000)
    await store.create(anOrder('p2'), T0, T0)
    const claims = await store.claim(1, T0 + 1, LEASE)
    t.equal(claims[0]?.order_id, 'p2', 'one order Processing')

    t.equal(await store.sweepOrders('Completed', T0 + 250, 1), 1, 'a batch is at most its limit')
    t.same(await statuses(store, ['c1', 'c2', 'c3']), [undefined, 'Completed', 'Completed'], 'the oldest first')
    t.equal(await store.sweepOrders('Completed', T0 + 250, 10), 1)
    t.equal(await store.sweepOrders('Completed', T0 + 250, 10), 0, 'nothing left before that time')
    t.same(await statuses(store, ['c2', 'c3', 'x1', 'f1', 'p1', 'p2']), [undefined, 'Completed', 'Cancelled', 'Failed', 'Pending', 'Processing'],
      'one finished more recently stays, and other statuses are not touched')
    t.same(await store.stats(), await recount(store), 'the aggregates equal a recount')

    t.equal(await store.sweepOrders('Failed', T0 + 1_000_000, 10), 1, 'Failed orders are swept on their own')
    t.equal(await store.sweepOrders('Cancelled', T0 + 1_000_000, 10), 1)
    t.same(await statuses(store, ['x1', 'f1', 'c3']), [undefined, undefined, 'Completed'])
    t.same(await store.stats(), await recount(store))
    const { stats } = await store.overview()
    t.match(stats.counts, { Completed: 1, Failed: 0, Cancelled: 0, Pending: 1, Processing: 1 })
  })

  t.test('deleteOrder erases a finished order and every delivery of it; a Pending or Processing order stays', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Pending', 'Completed'])
    await store.createEndpoint(endpoint, Date.now(), 10)
    await finished(store, 'A', 'Completed', T0 + 100)
    await finished(store, 'B', 'Completed', T0 + 100)
    const [first] = await store.claimDeliveries(10, Date.now(), LEASE)
    await store.settleDeliveries([{ claim: first!, kind: 'delivered', statusCode: 200 }], Date.now())
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 3, delivered: 1, failed: 0 } })

    const deleted = await store.deleteOrder('A')
    t.match(deleted, { deleted: true, order: { order_id: 'A', status: 'Completed' } })
    t.equal(await store.get('A'), undefined)
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 2, delivered: 0, failed: 0 } }, "A's deliveries, pending and delivered, are gone")
    const pending = await store.deliveries(endpoint.id, { status: 'pending', limit: 10 })
    t.same(pending.deliveries.map((d) => d.order_id).sort(), ['B', 'B'], "B's stay")

    await store.create(anOrder('P'), T0, T0 + 1_000_000)
    t.match(await store.deleteOrder('P'), { deleted: false, order: { status: 'Pending' } })
    t.equal((await store.get('P'))?.status, 'Pending')
    t.same(await store.deleteOrder('nope'), { deleted: false, order: undefined })
    t.same(await store.deleteOrder('A'), { deleted: false, order: undefined }, 'erased once')
    t.same(await store.stats(), await recount(store))
  })

  t.test('a deletion records order.deleted (ids only) for the endpoints that want Deleted, in its transaction; an erasure keeps it while it deletes the rest', async (t) => {
    const store = await fresh(t)
    const deletions = anEndpoint(['Completed', 'Deleted'])
    const statusOnly = anEndpoint(['Completed'])
    for (const endpoint of [deletions, statusOnly]) await store.createEndpoint(endpoint, Date.now(), 10)
    await finished(store, 'A', 'Completed', T0 + 100, 7)
    await finished(store, 'B', 'Completed', T0 + 200, 8)
    await finished(store, 'C', 'Cancelled', T0 + 300, 7)
    t.match(await store.deleteOrder('A'), { deleted: true })
    t.equal(await store.sweepOrders('Completed', T0 + 1_000_000, 10), 1)
    await store.requestErasure(7, T0)
    t.equal(await store.deleteUserOrders(7, 10), 1)

    const listed = async (endpointId: string) => (await store.deliveries(endpointId, { status: 'pending', limit: 10 })).deliveries
      .map((d) => `${d.event_type} ${d.order_id}`).sort()
    t.same(await listed(deletions.id), ['order.completed B', 'order.deleted A', 'order.deleted B', 'order.deleted C'],
      "an erasure deleted A's order.completed but not its order.deleted; retention left B's")
    t.same(await listed(statusOnly.id), ['order.completed B'], 'an endpoint without Deleted gets none')
    t.match(await store.endpoint(deletions.id), { counts: { pending: 4, delivered: 0, failed: 0 } })
    // An order's deliveries are claimed one after another (B's order.completed, then its order.deleted).
    const sent: DeliveryClaim[] = []
    for (let claims = await store.claimDeliveries(10, Date.now(), LEASE); claims.length > 0; claims = await store.claimDeliveries(10, Date.now(), LEASE)) {
      sent.push(...claims)
      await store.settleDeliveries(claims.map((claim) => ({ claim, kind: 'delivered', statusCode: 200 })), Date.now())
    }
    const bodies = sent.filter((claim) => claim.endpoint_id === deletions.id).map((claim) => JSON.parse(claim.payload))
      .filter((body) => body.type === 'order.deleted').sort((a, b) => (a.data.order_id < b.data.order_id ? -1 : 1))
    t.same(bodies.map((body) => body.data), [
      { order_id: 'A', user_id: 7, reason: 'erased' },
      { order_id: 'B', user_id: 8, reason: 'retention' },
      { order_id: 'C', user_id: 7, reason: 'erased' }
    ], 'ids and the reason only: no customer data')
    t.ok(bodies.every((body) => !Number.isNaN(Date.parse(body.timestamp))), 'each has its timestamp')
    t.same(await store.stats(), await recount(store))
  })

  t.test("an erasure's order.deleted waits for an attempt of the order under way to the same endpoint (its end, or its lease's), so it cannot overtake it", async (t) => {
    // The attempt under way was deleted with the order's other deliveries, and order.deleted, then
    // first of its order, went at once: a receiver could get it before the order.completed being sent.
    const store = await fresh(t)
    const endpoint = anEndpoint(['Completed', 'Deleted'])
    await store.createEndpoint(endpoint, Date.now(), 10)
    await finished(store, 'A', 'Completed', T0 + 100)
    const leaseMs = 500
    const claimedAt = Date.now()
    const [attempt] = await store.claimDeliveries(10, claimedAt, leaseMs)
    t.match(attempt, { order_id: 'A' }, "A's order.completed is being sent")
    t.match(await store.deleteOrder('A'), { deleted: true })
    t.same(await store.claimDeliveries(10, Date.now(), LEASE), [], 'order.deleted waits while that attempt may be under way')
    const waitMs = await store.nextDeliveryIn(Date.now())
    t.ok(waitMs !== null && waitMs > 0 && waitMs <= leaseMs, `due when the attempt's lease ends, in ${waitMs} ms`)
    const [deleted] = await waitFor(async () => {
      const claims = await store.claimDeliveries(10, Date.now(), LEASE)
      return claims.length > 0 && claims
    }, 'order.deleted once the lease has ended')
    t.match(deleted, { order_id: 'A' })
    t.equal(JSON.parse(deleted!.payload).type, 'order.deleted')
    t.ok(Date.now() >= claimedAt + leaseMs, 'not before the lease ended')

    // An attempt that ends before its lease lets it go at once.
    await finished(store, 'B', 'Completed', T0 + 200)
    const [sending] = await store.claimDeliveries(10, Date.now(), LEASE)
    t.match(sending, { order_id: 'B' })
    t.match(await store.deleteOrder('B'), { deleted: true })
    t.same(await store.claimDeliveries(10, Date.now(), LEASE), [])
    await store.settleDeliveries([{ claim: sending!, kind: 'delivered', statusCode: 200 }], Date.now())
    const [next] = await store.claimDeliveries(10, Date.now(), LEASE)
    t.match(next, { order_id: 'B' }, "B's order.deleted is due once the attempt it waited for has ended")
    t.equal(JSON.parse(next!.payload).type, 'order.deleted')
  })

  t.test("deleteUserOrders erases one customer's finished orders, a batch at a time, and no one else's, while their erasure waits", async (t) => {
    const store = await fresh(t)
    await finished(store, 'u1', 'Completed', T0 + 100, 7)
    await finished(store, 'u2', 'Cancelled', T0 + 110, 7)
    await finished(store, 'u3', 'Failed', T0 + 120, 7)
    await finished(store, 'o1', 'Completed', T0 + 130, 8)
    await finished(store, 'big', 'Completed', T0 + 140, Number.MAX_SAFE_INTEGER)
    await store.create(anOrder('u4', { user_id: 7 }), T0, T0 + 1_000_000)
    t.equal(await store.deleteUserOrders(7, 2), 0, 'no erasure asked: nothing erased')
    await store.requestErasure(7, T0)
    await store.requestErasure(Number.MAX_SAFE_INTEGER, T0)
    await store.requestErasure(7, T0 + 1)
    t.same(await store.erasures(10), [7, Number.MAX_SAFE_INTEGER], 'the erasures asked for are kept, each once')
    t.same(await store.erasures(1), [7], 'up to the limit, lowest id first')
    t.equal(await store.deleteUserOrders(7, 2), 2)
    t.same(await store.erasures(10), [7, Number.MAX_SAFE_INTEGER], 'kept while batches come back full')
    t.equal(await store.deleteUserOrders(7, 2), 1)
    t.same(await store.erasures(10), [Number.MAX_SAFE_INTEGER], 'a short batch ended the erasure')
    t.equal(await store.deleteUserOrders(7, 2), 0)
    t.same(await statuses(store, ['u1', 'u2', 'u3', 'u4', 'o1', 'big']), [undefined, undefined, undefined, 'Pending', 'Completed', 'Completed'])
    t.equal(await store.deleteUserOrders(Number.MAX_SAFE_INTEGER, 2), 1, 'the largest user_id')
    t.same(await store.erasures(10), [])
    t.equal(await store.get('big'), undefined)
    t.same(await store.stats(), await recount(store))
  })

  t.test('a delivery sweep deletes delivered and failed deliveries last updated before a time, never pending ones', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Completed'])
    await store.createEndpoint(endpoint, Date.now(), 10)
    for (const id of ['A', 'B', 'C']) await finished(store, id, 'Completed', T0 + 100)
    const claims = await store.claimDeliveries(2, Date.now(), LEASE)
    t.equal(claims.length, 2)
    await store.settleDeliveries([
      { claim: claims[0]!, kind: 'delivered', statusCode: 200 },
      { claim: claims[1]!, kind: 'failed', error: 'gone', statusCode: 410 }
    ], Date.now())
    t.equal(await store.sweepDeliveries(Date.now() - 60_000, 10), 0, 'settled more recently than that: kept')
    t.equal(await store.sweepDeliveries(Date.now() + 60_000, 1), 1, 'a batch at most')
    t.equal(await store.sweepDeliveries(Date.now() + 60_000, 10), 1)
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 1, delivered: 0, failed: 0 } }, 'the pending one is kept')
    t.equal((await store.deliveries(endpoint.id, { status: 'pending', limit: 10 })).deliveries.length, 1)
  })

  t.test('finished populate records are swept; one still under way is kept', async (t) => {
    const store = await fresh(t)
    const done = await store.openBatch('done', 1, T0)
    await store.populateChunk(done, [anOrder('b1')], T0, T0)
    await store.openBatch('open', 2, T0)
    t.equal(await store.sweepBatches(T0 + 1, 10), 1)
    t.match(await store.openBatch('open', 2, T0 + 2), { entries_done: 0, total_entries: 2 }, 'the unfinished one is as it was')
    t.match(await store.openBatch('done', 5, T0 + 2), { entries_done: 0, total_entries: 5 }, 'the finished one is gone: its id is new again')
  })

  t.test('a populate record is swept by when its batch finished, not when it was opened', async (t) => {
    // Swept by its opening time, a populate longer than the retention lost its record as it
    // finished: sent again (a client that lost the answer), it was a new batch, every order of it
    // "failed" as existing, instead of the answer of the first call.
    const store = await fresh(t)
    const batch = await store.openBatch('long', 2, T0)
    await store.populateChunk(await store.populateChunk(batch, [anOrder('l1')], T0 + 500, T0 + 500), [anOrder('l2')], T0 + 1000, T0 + 1000)
    t.equal(await store.sweepBatches(T0 + 800, 10), 0, 'opened before that time, finished after: kept')
    t.match(await store.openBatch('long', 2, T0 + 900), { entries_done: 2, total_entries: 2 })
    t.equal(await store.sweepBatches(T0 + 1001, 10), 1)
  })

  t.test('the store reports its size on disk', async (t) => {
    const store = await fresh(t)
    t.ok(await store.diskBytes() >= 0)
  })
}
