import type { Test } from 'tap'
import { freshStore } from './store-contract.ts'
import { toOrder } from '../../src/order.ts'
import type { OrderStore } from '../../src/store/order-store.ts'
import { circuitState, type DeliveryClaim, type NewEndpoint, type WebhookEvent } from '../../src/store/webhook-store.ts'
import { anOrder, waitFor } from '../helper.ts'

const LEASE = 30_000
const MAX_ENDPOINTS = 100

let endpoints = 0
export function anEndpoint (events: WebhookEvent[], id = `ep_test_${++endpoints}`): NewEndpoint {
  return { id, url: `http://127.0.0.1:9/${id}`, events, description: null, secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0' }
}

/** Creates an order and takes it to Completed, one transaction per step. */
async function complete (store: OrderStore, orderId: string): Promise<void> {
  const now = Date.now()
  await store.create(anOrder(orderId), now, now)
  const claims = await store.claim(1, now, LEASE)
  await store.settle(claims.map((claim) => ({ claim, ok: true as const })), now)
}

const parse = (claim: DeliveryClaim) => JSON.parse(claim.payload) as { type: string, timestamp: string, data: { order_id: string, status: string } }

/** What every store must do for webhooks; run against each store by its own test file. */
export function webhookStoreContract (t: Test, open: () => Promise<OrderStore>): void {
  const fresh = freshStore(open)

  t.test('status changes no endpoint wants record nothing', async (t) => {
    const store = await fresh(t)
    await complete(store, 'A')
    t.equal(await store.nextDeliveryIn(Date.now()), null)
    await store.createEndpoint(anEndpoint(['Failed']), Date.now(), MAX_ENDPOINTS)
    await complete(store, 'B')
    t.equal(await store.nextDeliveryIn(Date.now()), null, 'not even with an endpoint that wants another status')
  })

  t.test('a change an endpoint wants is recorded with it: the order as GET returns it, due at once, counted', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Completed'])
    const created = await store.createEndpoint(endpoint, Date.now(), MAX_ENDPOINTS)
    t.match(created, { ...endpoint, counts: { pending: 0, delivered: 0, failed: 0 }, last_error: null })
    let woken = 0
    store.onDeliveries(() => { woken++ })
    await complete(store, 'A')
    await waitFor(() => woken > 0, 'deliverers told')
    t.ok((await store.nextDeliveryIn(Date.now()) as number) <= 0, 'due now')
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 1, delivered: 0, failed: 0 } })

    const [claim, ...others] = await store.claimDeliveries(10, Date.now(), LEASE)
    t.same(others, [])
    const body = parse(claim!)
    t.equal(body.type, 'order.completed')
    t.same(body.data, toOrder((await store.get('A'))!), 'the order as GET returns it')
    t.match(claim, { endpoint_id: endpoint.id, order_id: 'A', attempts: 0, target: { url: endpoint.url, secret: endpoint.secret } })
    t.match(claim!.id, /^msg_[A-Za-z0-9_-]{22}$/)
    t.same(await store.claimDeliveries(10, Date.now(), LEASE), [], 'a claimed delivery is not claimed again while its lease runs')

    t.equal(await store.settleDeliveries([{ claim: claim!, kind: 'delivered', statusCode: 204 }], Date.now()), 1)
    t.equal(await store.settleDeliveries([{ claim: claim!, kind: 'delivered', statusCode: 204 }], Date.now()), 0, 'settled once')
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 0, delivered: 1, failed: 0 } })
    const { deliveries } = await store.deliveries(endpoint.id, { status: 'delivered', limit: 10 })
    t.match(deliveries, [{ id: claim!.id, status: 'delivered', attempts: 1, last_status_code: 204, event_type: 'order.completed' }])
    t.equal(await store.nextDeliveryIn(Date.now()), null)
  })

  t.test('events of one order reach an endpoint in order: a later one waits for the earlier one to be settled', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Pending', 'Processing', 'Completed'])
    await store.createEndpoint(endpoint, Date.now(), MAX_ENDPOINTS)
    await complete(store, 'A')
    await complete(store, 'B')
    const first = await store.claimDeliveries(10, Date.now(), LEASE)
    t.same(first.map((c) => `${c.order_id} ${parse(c).type}`), ['A order.pending', 'B order.pending'], 'only the first event of each order')
    t.same(await store.claimDeliveries(10, Date.now(), LEASE), [], 'the later ones were put off')
    const [a, b] = first as [DeliveryClaim, DeliveryClaim]
    await store.settleDeliveries([{ claim: a, kind: 'delivered', statusCode: 200 }], Date.now())
    t.ok((await store.nextDeliveryIn(Date.now()) as number) <= 0, 'the next event of A is due at once')
    const second = await store.claimDeliveries(10, Date.now(), LEASE)
    t.same(second.map((c) => `${c.order_id} ${parse(c).type}`), ['A order.processing'])

    // B's first event fails for good: its next events go on.
    await store.settleDeliveries([{ claim: b, kind: 'failed', error: 'HTTP 500', statusCode: 500 }], Date.now())
    const third = await store.claimDeliveries(10, Date.now(), LEASE)
    t.same(third.map((c) => `${c.order_id} ${parse(c).type}`), ['B order.processing'])
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 4, delivered: 1, failed: 1 }, last_error: 'HTTP 500' })
  })

  t.test('a failed attempt is tried again later; given up, it is redelivered by hand from the start', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Completed'])
    await store.createEndpoint(endpoint, Date.now(), MAX_ENDPOINTS)
    await complete(store, 'A')
    const [claim] = await store.claimDeliveries(10, Date.now(), LEASE)
    await store.settleDeliveries([{ claim: claim!, kind: 'retry', retryInMs: 60_000, error: 'connect ECONNREFUSED', statusCode: null }], Date.now())
    const wait = await store.nextDeliveryIn(Date.now()) as number
    t.ok(wait > 55_000 && wait <= 60_000, `due again in a minute (${wait} ms)`)
    t.same(await store.claimDeliveries(10, Date.now(), LEASE), [], 'not before')
    t.match(await store.endpoint(endpoint.id), { counts: { pending: 1 }, last_error: 'connect ECONNREFUSED' })
    t.match((await store.deliveries(endpoint.id, { status: 'pending', limit: 10 })).deliveries, [{ attempts: 1, last_error: 'connect ECONNREFUSED', last_status_code: null }])

    t.equal(await store.redeliver(endpoint.id, Date.now()), 0, 'nothing failed yet')
    const stranger = { ...claim!, token: 'not the holder' }
    t.equal(await store.settleDeliveries([{ claim: stranger, kind: 'failed', error: 'x', statusCode: null }], Date.now()), 0, 'only the holder settles')
    t.match(await store.endpoint(endpoint.id), { last_error: 'connect ECONNREFUSED' }, 'nor does a settle that was not taken record its error')

    const other = anEndpoint(['Completed'])
    await store.createEndpoint(other, Date.now(), MAX_ENDPOINTS)
    await complete(store, 'B')
    const claims = (await store.claimDeliveries(10, Date.now(), LEASE)).filter((c) => c.endpoint_id === other.id)
    await store.settleDeliveries(claims.map((c) => ({ claim: c, kind: 'failed' as const, error: 'HTTP 410', statusCode: 410 })), Date.now())
    t.match(await store.endpoint(other.id), { counts: { pending: 0, delivered: 0, failed: 1 } })
    t.equal(await store.redeliver(other.id, Date.now()), 1)
    t.match(await store.endpoint(other.id), { counts: { pending: 1, delivered: 0, failed: 0 } })
    const [again] = (await store.claimDeliveries(10, Date.now(), LEASE)).filter((c) => c.endpoint_id === other.id)
    t.match(again, { id: claims[0]!.id, attempts: 0 }, 'the same webhook-id, its attempts counted afresh')
    t.equal(await store.redeliver('ep_unknown', Date.now()), undefined)
  })

  t.test('claims handed back are due at once, their attempt not counted', async (t) => {
    const store = await fresh(t)
    await store.createEndpoint(anEndpoint(['Completed']), Date.now(), MAX_ENDPOINTS)
    await complete(store, 'A')
    const claims = await store.claimDeliveries(10, Date.now(), LEASE)
    t.equal(await store.releaseDeliveries(claims, Date.now()), 1)
    const again = await store.claimDeliveries(10, Date.now(), LEASE)
    t.match(again, [{ id: claims[0]!.id, attempts: 0 }])
  })

  t.test('a lease that ended (its process died) makes the delivery due again, with the same webhook-id', async (t) => {
    const store = await fresh(t)
    await store.createEndpoint(anEndpoint(['Completed']), Date.now(), MAX_ENDPOINTS)
    await complete(store, 'A')
    const [claim] = await store.claimDeliveries(10, Date.now(), 50)
    const [again] = await waitFor(async () => {
      const claims = await store.claimDeliveries(10, Date.now(), LEASE)
      return claims.length > 0 && claims
    }, 'the lease to end')
    t.equal(again!.id, claim!.id)
    t.equal(await store.settleDeliveries([{ claim: claim!, kind: 'delivered', statusCode: 200 }], Date.now()), 0, 'the old holder can no longer settle it')
    t.equal(await store.settleDeliveries([{ claim: again!, kind: 'delivered', statusCode: 200 }], Date.now()), 1)
  })

  t.test('deleting an endpoint removes it at once, its deliveries in the background; events recorded for it meanwhile are dropped when claimed', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Completed'])
    await store.createEndpoint(endpoint, Date.now(), MAX_ENDPOINTS)
    await complete(store, 'A')
    t.equal(await store.deleteEndpoint(endpoint.id, Date.now()), true)
    t.equal(await store.deleteEndpoint(endpoint.id, Date.now()), false)
    t.equal(await store.endpoint(endpoint.id), undefined)
    t.same(await store.endpoints(), [])
    await complete(store, 'B')
    await waitFor(async () => await store.nextDeliveryIn(Date.now()) === null, 'its delivery to be removed, and none recorded for B')
    t.equal(await store.purgeDeletedEndpoints(1000), false, 'nothing left to remove')
    t.equal(await store.queueDelivery({ id: 'msg_x', endpoint_id: endpoint.id, order_id: null, event_type: 'webhook.test', payload: '{}', created_at: Date.now() }, Date.now()), false)

    // As another process that has not heard of the deletion yet would record one.
    const gone = anEndpoint(['Completed'])
    await store.createEndpoint(gone, Date.now(), MAX_ENDPOINTS)
    t.equal(await store.queueDelivery({ id: 'msg_y', endpoint_id: gone.id, order_id: null, event_type: 'webhook.test', payload: '{}', created_at: Date.now() }, Date.now()), true)
    const [claim] = await store.claimDeliveries(10, Date.now(), LEASE)
    await store.deleteEndpoint(gone.id, Date.now())
    t.equal(await store.queueDelivery({ id: 'msg_z', endpoint_id: gone.id, order_id: null, event_type: 'webhook.test', payload: '{}', created_at: Date.now() }, Date.now()), false)
    await waitFor(async () => (await store.deliveries(gone.id, { status: 'pending', limit: 10 })).deliveries.length === 0, 'its deliveries to be removed')
    t.equal(await store.settleDeliveries([{ claim: claim!, kind: 'discarded' }], Date.now()), 0, 'removed with its endpoint')
  })

  t.test('each event carries its order as of its own change, even when a later change of the same transaction follows', async (t) => {
    const store = await fresh(t)
    // An endpoint per status: events of one order for one endpoint are due one at a time.
    for (const status of ['Pending', 'Processing', 'Completed'] as const) await store.createEndpoint(anEndpoint([status]), Date.now(), MAX_ENDPOINTS)
    const now = Date.now()
    // Called in one turn: on SQLite one group commit creates the order and claims it.
    const [, together] = await Promise.all([store.create(anOrder('A'), now, now), store.claim(1, now, LEASE)])
    // PostgreSQL creates and claims in transactions of their own: the claim may have come first.
    const claims = together.length > 0 ? together : await store.claim(1, Date.now(), LEASE)
    t.equal(claims.length, 1)
    await store.settle(claims.map((claim) => ({ claim, ok: true as const })), Date.now())
    const events = (await store.claimDeliveries(10, Date.now(), LEASE)).map(parse).sort((a, b) => a.timestamp.localeCompare(b.timestamp) || a.type.localeCompare(b.type))
    const data = (type: string) => events.find((e) => e.type === type)?.data as unknown as { status: string, attempts: number, processing_started_at: string | null, completed_at: string | null }
    t.match(data('order.pending'), { status: 'Pending', attempts: 0, processing_started_at: null, completed_at: null }, 'the new order, not the claimed one')
    t.match(data('order.processing'), { status: 'Processing', attempts: 1, processing_started_at: String, completed_at: null })
    t.match(data('order.completed'), { status: 'Completed', attempts: 1, completed_at: String })
  })

  t.test('at most maxEndpoints endpoints; they list oldest first, with counts and without changing', async (t) => {
    const store = await fresh(t)
    const a = anEndpoint(['Completed'])
    const b = anEndpoint(['Failed', 'Cancelled'])
    t.ok(await store.createEndpoint(a, 1000, 2))
    t.ok(await store.createEndpoint(b, 2000, 2))
    t.equal(await store.createEndpoint(anEndpoint(['Failed']), 3000, 2), null, 'the third is refused')
    t.match(await store.endpoints(), [
      { ...a, created_at: 1000, counts: { pending: 0, delivered: 0, failed: 0 } },
      { ...b, created_at: 2000 }
    ])
  })

  t.test('deliveries list newest first, page by page, per state', async (t) => {
    const store = await fresh(t)
    const endpoint = anEndpoint(['Pending'])
    await store.createEndpoint(endpoint, Date.now(), MAX_ENDPOINTS)
    await store.createMany(['A', 'B', 'C'].map((id) => anOrder(id)), Date.now(), Date.now())
    const first = await store.deliveries(endpoint.id, { status: 'pending', limit: 2 })
    t.same(first.deliveries.map((d) => d.order_id), ['C', 'B'])
    const second = await store.deliveries(endpoint.id, { status: 'pending', limit: 2, before: first.lastSeq! })
    t.same(second.deliveries.map((d) => d.order_id), ['A'])
    t.equal(second.lastSeq, null)
    t.same((await store.deliveries(endpoint.id, { status: 'failed', limit: 2 })).deliveries, [])
  })

  t.test('a claim gives each endpoint at most its room: the deliveries due first cannot take every slot', async (t) => {
    const store = await fresh(t)
    const crowded = anEndpoint(['Pending'])
    await store.createEndpoint(crowded, Date.now(), MAX_ENDPOINTS)
    await store.createMany(Array.from({ length: 20 }, (_, i) => anOrder(`E${i}`)), Date.now(), Date.now() + 3_600_000)
    const other = anEndpoint(['Pending'])
    await store.createEndpoint(other, Date.now(), MAX_ENDPOINTS)
    await store.createMany(Array.from({ length: 5 }, (_, i) => anOrder(`F${i}`)), Date.now(), Date.now() + 3_600_000)
    const first = await store.claimDeliveries(10, Date.now(), LEASE, { max: 5, busy: new Map([[crowded.id, 3]]) })
    const count = (claims: DeliveryClaim[], id: string) => claims.filter((c) => c.endpoint_id === id).length
    t.equal(count(first, crowded.id), 2, 'the crowded endpoint: its room, 5 less the 3 under way')
    t.equal(count(first, other.id), 5, 'the other: its room, 5, though its deliveries were recorded later')
    const next = await store.claimDeliveries(10, Date.now(), LEASE, { max: 5, busy: new Map([[crowded.id, 5], [other.id, 5]]) })
    t.same(next, [], 'none for an endpoint at its cap')
    t.equal((await store.claimDeliveries(100, Date.now(), LEASE)).length, 25 + 5 - 7, 'without a cap, the rest (the crowded endpoint wants the later orders too)')
  })

  t.test('an endpoint whose attempts keep failing is backed off as a whole: its deliveries wait while the others flow, then one probe goes', async (t) => {
    const store = await fresh(t)
    // Cool-downs long enough to look at the open circuit on a loaded machine, short enough to wait for.
    const circuit = { failures: 3, cooldownMs: 1500, maxCooldownMs: 100_000 }
    const dead = anEndpoint(['Pending'])
    const live = anEndpoint(['Pending'])
    await store.createEndpoint(dead, Date.now(), MAX_ENDPOINTS)
    await store.createEndpoint(live, Date.now(), MAX_ENDPOINTS)
    await store.createMany(Array.from({ length: 6 }, (_, i) => anOrder(`C${i}`)), Date.now(), Date.now() + 3_600_000)
    const claims = await store.claimDeliveries(100, Date.now(), LEASE)
    const of = (list: DeliveryClaim[], id: string) => list.filter((c) => c.endpoint_id === id)
    const [d1, d2, d3, d4, ...unsent] = of(claims, dead.id) as DeliveryClaim[]
    const fail = (claim: DeliveryClaim | undefined) => ({ claim: claim!, kind: 'retry' as const, retryInMs: 0, error: 'HTTP 500', statusCode: 500 })
    await store.settleDeliveries(of(claims, live.id).map((claim) => ({ claim, kind: 'delivered' as const, statusCode: 204 })), Date.now(), circuit)

    await store.settleDeliveries([fail(d1), fail(d2)], Date.now(), circuit)
    t.match(await store.endpoint(dead.id), { consecutive_failures: 2, circuit_open_until: null }, 'closed below the threshold')
    await store.settleDeliveries([fail(d3)], Date.now(), circuit)
    const opened = await store.endpoint(dead.id)
    t.match(opened, { consecutive_failures: 3 })
    t.equal(circuitState(opened!, Date.now()), 'open', `open until ${opened!.circuit_open_until}`)
    await store.settleDeliveries([fail(d4)], Date.now(), circuit)
    t.match(await store.endpoint(dead.id), { consecutive_failures: 3, circuit_open_until: opened!.circuit_open_until }, 'an attempt claimed before it opened changes nothing')
    await store.releaseDeliveries(unsent, Date.now())

    await store.createMany([anOrder('C6'), anOrder('C7')], Date.now(), Date.now() + 3_600_000)
    const whileOpen = await store.claimDeliveries(100, Date.now(), LEASE)
    t.same(of(whileOpen, dead.id), [], "none of the open endpoint's 8 due deliveries is claimed")
    t.equal(of(whileOpen, live.id).length, 2, "the other endpoint's are")
    await store.settleDeliveries(whileOpen.map((claim) => ({ claim, kind: 'delivered' as const, statusCode: 204 })), Date.now(), circuit)
    const wait = await store.nextDeliveryIn(Date.now()) as number
    t.ok(wait > 0 && wait <= circuit.cooldownMs, `deliverers look again when the cool-down ends (${wait} ms), not at once`)
    t.match((await store.deliveries(dead.id, { status: 'pending', limit: 10 })).deliveries.map((d) => d.attempts).sort(), [0, 0, 0, 0, 1, 1, 1, 1], 'waiting counts no attempt')

    const probeAfter = async (what: string) => {
      const [probe, ...more] = await waitFor(async () => {
        const found = await store.claimDeliveries(100, Date.now(), LEASE)
        return found.length > 0 && found
      }, what)
      t.same(more, [], 'one probe only')
      t.match(probe, { endpoint_id: dead.id, probe: true })
      t.same(await store.claimDeliveries(100, Date.now(), LEASE), [], 'nothing else of it while the probe is under way')
      t.equal(circuitState((await store.endpoint(dead.id))!, Date.now()), 'open')
      return probe!
    }
    const first = await probeAfter('the cool-down to pass')
    await store.settleDeliveries([fail(first)], Date.now(), circuit)
    const reopened = await store.endpoint(dead.id)
    t.equal(reopened!.consecutive_failures, 4)
    t.ok(reopened!.circuit_open_until! - Date.now() > circuit.cooldownMs, `a failed probe reopens it for longer (${reopened!.circuit_open_until! - Date.now()} ms)`)

    const second = await probeAfter('the longer cool-down to pass')
    let woken = 0
    store.onDeliveries(() => { woken++ })
    await store.settleDeliveries([{ claim: second, kind: 'delivered', statusCode: 200 }], Date.now(), circuit)
    t.match(await store.endpoint(dead.id), { consecutive_failures: 0, circuit_open_until: null }, 'a success closes it')
    await waitFor(() => woken > 0, 'deliverers told that its deliveries are due')
    t.equal(of(await store.claimDeliveries(100, Date.now(), LEASE), dead.id).length, 7, 'the rest flow again')
  })
}
