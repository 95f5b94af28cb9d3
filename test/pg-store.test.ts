import pg from 'pg'
import t, { type Test } from 'tap'
import type { OrderChange, ProcessingState } from '../src/store/order-store.ts'
import { PgStore } from '../src/store/pg/pg-store.ts'
import { claimQuery, SQL } from '../src/store/pg/statements.ts'
import { anOrder, waitFor } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES } from './support/pg-database.ts'
import { recordingLog } from './support/recording-log.ts'
import { storeContract } from './support/store-contract.ts'
import { webhookStoreContract } from './support/webhook-store-contract.ts'
import { lifecycleContract } from './support/lifecycle-contract.ts'
import { TcpProxy } from './support/tcp-proxy.ts'

const T0 = 1_700_000_000_000
const LEASE = 30_000

/** A database of its own for one test, dropped when it ends (after the stores opened on it close). */
async function database (t: Test): Promise<string> {
  const { url, drop } = await createDatabase()
  t.teardown(drop)
  return url
}

async function openStore (t: Test, url: string, timeoutMs = 5000) {
  const log = recordingLog()
  const store = await PgStore.open(url, { timeoutMs, log })
  t.teardown(() => store.close())
  return { store, log }
}

/** Waits until one session of the database (a statement of the store) waits for a lock `client` holds. */
async function waitForLockWait (client: pg.Client, what: string): Promise<void> {
  await waitFor(async () => (await client.query<{ waiting: number }>(
    "SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]!.waiting === 1, what)
}

/** A store on a database of its own, dropped when the store closes. */
async function storeOnFreshDatabase (): Promise<PgStore> {
  const database = await createDatabase()
  const store = await openPgStore(database.url)
  const close = store.close.bind(store)
  store.close = async () => { await close(); await database.drop() }
  return store
}

t.test('PostgreSQL store', { skip: SKIP_POSTGRES }, async (t) => {
  storeContract(t, storeOnFreshDatabase)
})

t.test('PostgreSQL store: retention and erasure', { skip: SKIP_POSTGRES }, async (t) => {
  lifecycleContract(t, storeOnFreshDatabase)
})

t.test('PostgreSQL store: webhooks', { skip: SKIP_POSTGRES }, async (t) => {
  webhookStoreContract(t, storeOnFreshDatabase)
})

t.test('PostgreSQL: hundreds of changes of orders with 64-character ids in one transaction reach every process', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store, log } = await openStore(t, url)
  // Another process's view: it hears the changes only through NOTIFY.
  const { store: other } = await openStore(t, url)
  const heard: string[] = []
  other.onChanges((changes) => { for (const c of changes) heard.push(`${c.order_id} ${c.status}`) })
  const expected: string[] = []
  const expect = async (what: string, changes: string[]) => {
    expected.push(...changes)
    await waitFor(() => heard.length >= expected.length, `${what}: ${changes.length} changes heard`)
    // Rows changed by one statement come in no particular order.
    t.same(heard.slice(expected.length - changes.length).sort(), changes.sort(), what)
  }
  const as = (status: string, ids: string[]) => ids.map((id) => `${id} ${status}`)
  const id = (i: number) => `order-${String(i).padStart(4, '0')}-`.padEnd(64, 'x')
  const ids = (from: number, count: number) => Array.from({ length: count }, (_, i) => id(from + i))
  t.equal(id(0).length, 64)

  const bulk = ids(0, 300)
  t.same(await store.createMany(bulk.map((orderId) => anOrder(orderId)), T0, T0), [], 'createMany')
  await expect('createMany', as('Pending', bulk))

  const single = ids(300, 300)
  const results = await Promise.all(single.map((orderId) => store.create(anOrder(orderId), T0, T0)))
  t.same(new Set(results), new Set(['created']), 'creates, committed together')
  await expect('group-committed creates', as('Pending', single))

  const claims = await store.claim(600, T0, LEASE)
  t.equal(claims.length, 600)
  await expect('claim', as('Processing', [...bulk, ...single]))

  const [done, retried, failed] = [claims.slice(0, 200), claims.slice(200, 400), claims.slice(400)]
  t.equal(await store.settle([
    ...done.map((claim) => ({ claim, ok: true as const })),
    ...retried.map((claim) => ({ claim, ok: false as const, error: 'again', retryAt: T0 + 10 })),
    ...failed.map((claim) => ({ claim, ok: false as const, error: 'no', retryAt: null }))
  ], T0 + 5), 600)
  const orderIds = (list: typeof claims) => list.map((claim) => claim.order_id)
  await expect('settle', [...as('Completed', orderIds(done)), ...as('Pending', orderIds(retried)), ...as('Failed', orderIds(failed))])

  const again = await store.claim(600, T0 + 10, LEASE)
  t.equal(again.length, 200)
  await expect('claim again', as('Processing', orderIds(retried)))
  t.equal(await store.release(again, T0 + 11), 200)
  await expect('release', as('Pending', orderIds(retried)))

  t.equal((await store.claim(600, T0 + 12, 1)).length, 200)
  await expect('claim with a short lease', as('Processing', orderIds(retried)))
  t.equal(await waitFor(async () => await store.recoverExpired(T0 + 21, 3, []) || false, 'the short lease to end'), 200)
  await expect('recoverExpired', as('Pending', orderIds(retried)))

  t.equal((await store.cancel(id(200), T0 + 22)).cancelled, true)
  await expect('cancel', as('Cancelled', [id(200)]))

  t.equal(await store.create(anOrder(id(999)), T0 + 23, T0 + 23), 'created')
  t.equal((await store.claim(600, T0 + 23, LEASE)).length, 200, 'processing goes on: later orders are claimed')
  t.same(log.entries, [], 'nothing went wrong')
})

t.test('PostgreSQL: a pause reaches every process at once, and outlives them', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  // Another process's view: it hears the state only through NOTIFY.
  const { store: other } = await openStore(t, url)
  const heard: ProcessingState[] = []
  other.onProcessingState((state) => heard.push(state))
  await store.createMany([anOrder('A'), anOrder('B')], T0, T0)

  const paused = await store.setProcessingState('paused', () => T0 + 1)
  t.same(await other.claim(10, T0 + 2, LEASE), [], 'the other process claims nothing from the moment the pause is answered')
  await waitFor(() => heard.length === 1, 'the other process to hear the pause')
  t.same(heard, [paused])
  await other.close()

  const { store: restarted } = await openStore(t, url)
  t.same(await restarted.processingState(), paused, 'a process started later finds it paused')
  t.same(await restarted.claim(10, T0 + 3, LEASE), [])
  t.same(await restarted.setProcessingState('running', () => T0 + 4), { state: 'running', since: T0 + 4 })
  t.equal((await store.claim(10, T0 + 5, LEASE)).length, 2, 'resumed by another process')
})

t.test('PostgreSQL: a pause and the claims under way wait for each other, so no claim commits orders after a pause', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.create(anOrder('A'), T0, T0)
  // Another session, whose transactions stand for a claim or a pause, committed at will.
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())

  // What a claim holds from its statement to its commit.
  await other.query('BEGIN')
  await other.query("SELECT 1 FROM processing_state WHERE state = 'running' FOR SHARE")
  let answered = false
  const pause = store.setProcessingState('paused', () => T0).then((state) => { answered = true; return state })
  await waitForLockWait(other, 'the pause to wait for the claim under way')
  t.equal(answered, false, 'not answered while a claim is under way')
  await other.query('COMMIT')
  t.same(await pause, { state: 'paused', since: T0 })

  await store.setProcessingState('running', () => T0 + 1)
  // A pause not yet committed: a claim that begins meanwhile waits for it, then sees it.
  await other.query('BEGIN')
  await other.query("UPDATE processing_state SET state = 'paused', since = $1", [T0 + 2])
  const claim = store.claim(10, T0 + 3, LEASE)
  await waitForLockWait(other, 'the claim to wait for the pause under way')
  await other.query('COMMIT')
  t.same(await claim, [], 'the claim took nothing')
  t.equal((await store.get('A'))?.status, 'Pending')
})

t.test('PostgreSQL: a pause takes its since once the claims under way have committed, so none it let through started after it', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.create(anOrder('A'), Date.now(), Date.now())
  // Another session, whose transaction stands for a claim under way.
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('BEGIN')
  await other.query("SELECT 1 FROM processing_state WHERE state = 'running' FOR SHARE")
  const askedAt = Date.now()
  const pause = store.setProcessingState('paused', Date.now)
  await waitForLockWait(other, 'the pause to wait for the claim under way')
  // The claim's statement, its time taken after the pause was asked for, as a claim that got the row first may.
  const claimedAt = Math.max(Date.now(), askedAt + 1)
  const claim = claimQuery(10, claimedAt, LEASE, 'a token')
  t.equal((await other.query(claim)).rowCount, 1, 'the claim took A')
  await other.query('COMMIT')
  const paused = await pause
  t.match(await store.get('A'), { status: 'Processing', processing_started_at: claimedAt })
  t.ok(paused.since >= claimedAt, `since (${paused.since}) is not before A started (${claimedAt}), though the pause was asked for at ${askedAt}`)
})

t.test('PostgreSQL: change events are announced only while another process listens; the store\'s own listeners hear every one', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  const own: string[] = []
  store.onChanges((changes) => { for (const c of changes) own.push(`${c.order_id} ${c.status}`) })
  // A session listening on the channel that is no process of the service's: it sees what is announced.
  const spy = new pg.Client({ connectionString: url })
  await spy.connect()
  t.teardown(() => spy.end())
  const announced: string[] = []
  spy.on('notification', (message) => { if (message.channel === 'order_changes') announced.push(message.payload ?? '') })
  await spy.query('LISTEN order_changes')

  await store.create(anOrder('alone'), T0, T0)
  t.same(own, ['alone Pending'], 'alone: heard by its own listeners once committed')

  const { store: other } = await openStore(t, url)
  const heard: string[] = []
  other.onChanges((changes) => { for (const c of changes) heard.push(`${c.order_id} ${c.status}`) })
  await store.create(anOrder('together'), T0, T0)
  await waitFor(() => heard.length === 1 && own.length === 2 && announced.length === 1, 'the second create heard by both processes')
  t.same(heard, ['together Pending'], 'the other process hears it through NOTIFY')
  t.same(own, ['alone Pending', 'together Pending'], 'and this one once')
  // In commit order: the first create's, had it been announced, would have come before.
  t.match(announced, [/"together"/], 'only the change made while another process listened was announced')
})

t.test('PostgreSQL: a change committed once another process has opened reaches it, though its transaction looked for listeners before', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  // The COMMIT of the transaction that creates 'raced' waits until the test lets it through: that
  // transaction has looked for other processes' listeners and found none.
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }
  const query = proto.query
  t.teardown(() => { proto.query = query })
  let letCommit!: () => void
  const commitLetThrough = new Promise<void>((resolve) => { letCommit = resolve })
  let commitReached!: () => void
  const atCommit = new Promise<void>((resolve) => { commitReached = resolve })
  let creator: unknown
  proto.query = function (this: unknown, ...args: unknown[]) {
    if (creator === undefined && JSON.stringify(args[1] ?? null).includes('"raced"')) creator = this
    if (this !== creator || args[0] !== 'COMMIT') return query.apply(this, args)
    creator = null
    commitReached()
    // Committed once the COMMIT answers (the create resolves some turns later).
    return commitLetThrough.then(() => query.apply(this, args)).then((answer) => { committed = true; return answer })
  }
  let committed = false
  const creating = store.create(anOrder('raced'), T0, T0)
  await atCommit

  const heard: string[] = []
  let openedBeforeCommit: boolean | undefined
  const opening = PgStore.open(url, { timeoutMs: 5000, log: recordingLog() }).then((other) => {
    openedBeforeCommit = !committed
    other.onChanges((changes) => { for (const c of changes) heard.push(`${c.order_id} ${c.status}`) })
    return other
  })
  const probe = new pg.Client({ connectionString: url })
  await probe.connect()
  t.teardown(() => probe.end())
  // The commit goes on once the other process has opened, or waits for it to.
  await waitFor(async () => openedBeforeCommit !== undefined || (await probe.query(
    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'order-service listener %' AND wait_event_type = 'Lock'"
  )).rowCount === 1, 'the other process opened, or waiting for the transaction under way')
  letCommit()
  await creating
  const other = await opening
  t.teardown(() => other.close())
  if (openedBeforeCommit === true) await waitFor(() => heard.includes('raced Pending'), 'the change, committed after the other process opened, heard by it', 2000)
  t.equal(openedBeforeCommit, false, 'the other process is open only once the transaction that did not see it has ended')
})

t.test('PostgreSQL: when the other process goes, a change handed over directly comes after those of its order still on their way to the listener', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  const other = await PgStore.open(url, { timeoutMs: 5000, log: recordingLog() })
  const heard: string[] = []
  store.onChanges((changes) => { for (const c of changes) heard.push(`${c.order_id} ${c.status}`) })
  await store.create(anOrder('o'), T0, T0)
  await waitFor(() => heard.length === 1, 'the create, announced while another process listens')
  // This process's listener reads nothing for a while (a busy event loop, a slow network).
  const socket = (store as unknown as { listener: { client: { connection: { stream: { pause: () => void, resume: () => void } } } } }).listener.client.connection.stream
  socket.pause()
  const [claim] = await store.claim(1, T0, LEASE)
  await other.close()
  const probe = new pg.Client({ connectionString: url })
  await probe.connect()
  t.teardown(() => probe.end())
  await waitFor(async () => (await probe.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'order-service listener %'")).rowCount === 1, 'the other process\'s listener gone')
  await store.settle([{ claim: claim!, ok: true, result: 'done' }], T0 + 1)
  socket.resume()
  await waitFor(() => heard.length === 3, 'the claim and the settle heard')
  t.same(heard, ['o Pending', 'o Processing', 'o Completed'], 'in commit order')
})

t.test('PostgreSQL: a process alone whose commit\'s answer is lost past the deadline still hands the committed change to its listeners', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url, 1000)
  const heard: string[] = []
  store.onChanges((changes) => { for (const c of changes) heard.push(`${c.order_id} ${c.status}`) })
  // The COMMIT of the transaction that creates 'lost' reaches the server, its answer never the client.
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }
  const query = proto.query
  t.teardown(() => { proto.query = query })
  let creator: unknown
  proto.query = function (this: { connection: { stream: { pause: () => void } } }, ...args: unknown[]) {
    if (creator === undefined && JSON.stringify(args[1] ?? null).includes('"lost"')) creator = this
    if (this === creator && args[0] === 'COMMIT') this.connection.stream.pause()
    return query.apply(this, args)
  }
  await t.rejects(store.create(anOrder('lost'), T0, T0), 'the create did not hear its commit in time')
  t.match(await store.get('lost'), { status: 'Pending' }, 'though it committed')
  await waitFor(() => heard.includes('lost Pending'), 'its change heard by this process\'s listeners', 3000)
  t.same(heard, ['lost Pending'], 'once')
})

t.test('PostgreSQL: a notification this service did not send is logged and ignored', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store, log } = await openStore(t, url)
  const changes: OrderChange[] = []
  const work: number[] = []
  const states: ProcessingState[] = []
  store.onChanges((batch) => changes.push(...batch))
  store.onWork((at) => work.push(at))
  store.onProcessingState((state) => states.push(state))

  // Any user of the database may send these.
  const stranger = new pg.Client({ connectionString: url })
  await stranger.connect()
  t.teardown(() => stranger.end())
  const foreign: Array<[string, string]> = [
    ['order_changes', 'not json'],
    ['order_changes', '{"order_id": "A"}'],
    ['order_changes', 'null'],
    ['order_changes', '[["A", "Shipped", 1, 0, 1, null]]'],
    ['order_changes', '[["A", "Pending", "1", 0, 1, null]]'],
    ['order_changes', '[["A", "Pending", 1, 0, 1]]'],
    ['orders_available', 'soon'],
    ['orders_available', ''],
    ['orders_available', '1.5'],
    ['processing_state', 'paused'],
    ['processing_state', '{"state": "stopped", "since": 1}'],
    ['processing_state', '{"state": "paused", "since": "now"}'],
    ['processing_state', '{"state": "paused"}']
  ]
  for (const [channel, payload] of foreign) await stranger.query('SELECT pg_notify($1, $2)', [channel, payload])

  t.equal(await store.create(anOrder('after'), T0, T0), 'created')
  await waitFor(() => changes.length > 0 && work.length > 0, 'the next changes to be heard')
  t.same(changes.map((c) => `${c.order_id} ${c.status}`), ['after Pending'], 'only the real change was delivered')
  t.same(work, [T0])
  t.same(states, [], 'no processing state was delivered')
  t.same(log.entries.map((e) => [e.level, e.message, (e.details as { payload: string }).payload]),
    foreign.map(([, payload]) => ['warn', 'ignored a notification this service did not send', payload]), 'each logged once')
})

t.test('PostgreSQL: the listener notices a connection that stops answering, and reconnects', { skip: SKIP_POSTGRES }, async (t) => {
  const { proxy, url } = await TcpProxy.inFrontOf(await database(t))
  t.teardown(() => proxy.cut())
  const timeoutMs = 500
  const { store, log } = await openStore(t, url, timeoutMs)
  const work: number[] = []
  store.onWork((at) => work.push(at))

  const started = Date.now()
  proxy.blackHole()
  await waitFor(() => log.entries.some((e) => e.message.includes('lost its connection')), 'the listener to notice')
  const noticedMs = Date.now() - started
  t.ok(noticedMs < timeoutMs * 2 + 2000, `noticed after ${noticedMs} ms (checks every ${timeoutMs} ms, each with a deadline of ${timeoutMs} ms)`)

  await proxy.restore()
  await waitFor(() => log.entries.some((e) => e.message === 'notification listener connected again'), 'the listener to reconnect')
  t.equal(work.length, 1, 'reconnected, it wakes the workers: work announced meanwhile was missed')
  t.equal(await store.create(anOrder('after'), T0, T0), 'created')
  await waitFor(() => work.includes(T0), 'the new connection to hear announcements')
})

t.test('PostgreSQL: closing the store while the server does not answer takes at most the deadline', { skip: SKIP_POSTGRES }, async (t) => {
  const { proxy, url } = await TcpProxy.inFrontOf(await database(t))
  t.teardown(() => proxy.cut())
  const timeoutMs = 500
  const store = await PgStore.open(url, { timeoutMs, log: recordingLog() })
  await store.stats() // a pooled connection, idle from now on
  proxy.blackHole()
  const started = Date.now()
  await store.close()
  const closedMs = Date.now() - started
  t.ok(closedMs < timeoutMs + 2000, `closed after ${closedMs} ms`)
})

t.test('leases are set and compared with the database clock, not the caller\'s', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(() => client.end())
  const HOUR = 3_600_000
  await store.createMany([anOrder('ahead'), anOrder('behind')], Date.now() - HOUR, Date.now() - HOUR)

  // A worker whose clock runs an hour ahead claims for 30 s: not over for one whose clock runs two hours ahead.
  const [ahead] = await store.claim(1, Date.now() + HOUR, 30_000)
  t.equal(ahead?.order_id, 'ahead')
  const { rows: [lease] } = await client.query<{ remaining: number }>(`SELECT (lease_until - extract(epoch FROM clock_timestamp()) * 1000)::float8 AS remaining
    FROM orders WHERE order_id = 'ahead'`)
  t.ok(lease!.remaining > 20_000 && lease!.remaining <= 30_000, `the lease ends 30 s after the database's now (${Math.round(lease!.remaining)} ms left)`)
  t.equal(await store.recoverExpired(Date.now() + 2 * HOUR, 3, []), 0, 'a caller whose clock runs ahead does not take over a live claim')

  // A short claim by a worker with a true clock ends for a worker whose clock runs an hour behind all the same.
  const [behind] = await store.claim(1, Date.now(), 50)
  t.equal(behind?.order_id, 'behind')
  const recovered = await waitFor(async () => {
    const count = await store.recoverExpired(Date.now() - HOUR, 3, [])
    return count > 0 && count
  }, 'the short lease to end by the database clock')
  t.equal(recovered, 1)
  t.match(await store.get('behind'), { status: 'Pending', last_error: 'lease expired' })
  t.match(await store.get('ahead'), { status: 'Processing' })
})

t.test('PostgreSQL: an event waiting for an earlier one of its order that is being sent is looked at again within a second, not when that one\'s lease ends', { skip: SKIP_POSTGRES }, async (t) => {
  // A settle that commits while a claim runs is not seen by the claim's snapshot: the next event,
  // put off until the lease ended, went out WEBHOOK_TIMEOUT_MS + 5 s late (seen in CI).
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.createEndpoint({ id: 'ep_chain', url: 'http://127.0.0.1:9/', events: ['Pending', 'Completed'], description: null, secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0' }, Date.now(), 100)
  await store.create(anOrder('A'), Date.now(), Date.now())
  const [claim] = await store.claim(1, Date.now(), LEASE)
  await store.settle([{ claim: claim!, ok: true }], Date.now())
  const [first] = await store.claimDeliveries(10, Date.now(), LEASE)
  t.equal(first?.order_id, 'A')
  t.same(await store.claimDeliveries(10, Date.now(), LEASE), [], 'the completed event waits for the pending one')
  const recheckIn = await store.nextDeliveryIn() as number
  t.ok(recheckIn > 0 && recheckIn <= 1000, `looked at again in ${recheckIn} ms, not in the lease's ${LEASE} ms`)
})

t.test('PostgreSQL: a renewal does not wait for an order another transaction holds, nor tells its claim lost; once that one took the order over, it does', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.createMany([anOrder('held'), anOrder('free')], T0, T0)
  const [held, free] = await store.claim(2, T0, 50)
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())
  // Another process's recovery of the expired lease, under way: its statement, not yet committed.
  await waitFor(async () => (await other.query("SELECT 1 FROM orders WHERE order_id = 'held' AND lease_until < (extract(epoch FROM now()) * 1000)::bigint")).rowCount === 1,
    'the lease to end by the database clock')
  await other.query('BEGIN')
  await other.query("UPDATE orders SET status = 'Pending', claim_token = NULL, lease_until = NULL WHERE order_id = 'held'")
  t.same(await store.extendLeases([held!, free!], T0, LEASE), [], 'the held one skipped, as still current: not lost')
  const { rows: [renewal] } = await other.query<{ renewed: boolean }>(`SELECT lease_until > (extract(epoch FROM now()) * 1000)::bigint + 10000 AS renewed
    FROM orders WHERE order_id = 'free'`)
  t.equal(renewal?.renewed, true, 'the other one renewed')
  await other.query('COMMIT')
  t.same(await store.extendLeases([held!, free!], T0, LEASE), [held], 'once the recovery committed, its claim is told lost')
})

t.test('PostgreSQL: an erasure that waits for another transaction on its order answers by the order as that one left it', { skip: SKIP_POSTGRES }, async (t) => {
  // The order was read before the DELETE waited for the row: a retry that won made it a 409 naming
  // Failed ("only a ... Failed order can be deleted"), and an erasure that won a 409 naming
  // Completed for an order that no longer existed.
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.create(anOrder('failed'), T0, T0)
  const [claim] = await store.claim(1, T0 + 1, LEASE)
  await store.settle([{ claim: claim!, ok: false, error: 'x', retryAt: null }], T0 + 2)
  await store.create(anOrder('done'), T0, T0)
  const [done] = await store.claim(1, T0 + 3, LEASE)
  await store.settle([{ claim: done!, ok: true }], T0 + 4)
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())

  // A retry of the Failed order under way (its statement, not yet committed).
  await other.query('BEGIN')
  await other.query(SQL.requeue, [T0 + 5, ['failed']])
  const erasing = store.deleteOrder('failed')
  await waitForLockWait(other, 'the erasure to wait for the retry')
  await other.query('COMMIT')
  t.match(await erasing, { deleted: false, order: { order_id: 'failed', status: 'Pending' } }, 'a 409 naming Pending, its status now')

  // Another erasure of the Completed order under way.
  await other.query('BEGIN')
  await other.query('DELETE FROM orders WHERE order_id = $1', ['done'])
  const second = store.deleteOrder('done')
  await waitForLockWait(other, 'the erasure to wait for the other one')
  await other.query('COMMIT')
  t.same(await second, { deleted: false, order: undefined }, 'a 404: the order is gone')
})

t.test('PostgreSQL: one process erases a customer at a time; another takes none of their orders meanwhile, and the erasure stays until the holder ends it', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  for (const id of ['a', 'b', 'c']) await store.create(anOrder(id, { user_id: 7 }), T0, T0)
  const claims = await store.claim(3, T0 + 1, LEASE)
  await store.settle(claims.map((claim) => ({ claim, ok: true as const })), T0 + 2)
  await store.requestErasure(7, T0 + 3)
  // Another process's erasure batch under way: it holds the customer's erasure.
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('BEGIN')
  await other.query(SQL.erasure, [7])
  t.equal(await store.deleteUserOrders(7, 2), 0, 'none taken, without waiting')
  t.same(await store.erasures(10), [7])
  await other.query('ROLLBACK')
  t.equal(await store.deleteUserOrders(7, 2), 2)
  t.equal(await store.deleteUserOrders(7, 2), 1)
  t.same(await store.erasures(10), [], 'the short batch ended it')
})

t.test('PostgreSQL: an erasure asked again while its last batch is under way is kept, so orders finished meanwhile are erased too', { skip: SKIP_POSTGRES }, async (t) => {
  const url = await database(t)
  const { store } = await openStore(t, url)
  await store.requestErasure(7, T0)
  // A process's last batch of that erasure, between its DELETE of orders and its commit.
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('BEGIN')
  await other.query(SQL.erasure, [7])
  const asked = store.requestErasure(7, T0 + 1)
  await waitForLockWait(other, 'the second ask to wait for the batch')
  await other.query(SQL.endErasure, [7])
  await other.query('COMMIT')
  await asked
  t.same(await store.erasures(10), [7], 'the second ask outlives the batch that ended the first')
})
