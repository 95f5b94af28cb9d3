import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import type { OrderRecord } from '../src/order.ts'
import type { OrderStore } from '../src/store/order-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, build, tempDir, waitFor, type Settings } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'
import { runToEnd, ServerProcess } from './support/server-process.ts'

// Real modules run by real processes, some for several leases: longer than tap's 30 s for a file.
t.setTimeout(300_000)

/** Writes a processing module (an ES module) into `dir`; returns its path. */
function writeModule (dir: string, source: string, name = 'step.mjs'): string {
  const path = join(dir, name)
  writeFileSync(path, source)
  return path
}

/** The app with PROCESSOR_MODULE set to a module written for the test (SQLite, or PostgreSQL with DATABASE_URL). */
async function appWithModule (t: Test, source: string, settings: Settings = {}): Promise<{ app: FastifyInstance, dir: string }> {
  const dir = tempDir(t)
  const app = await build(t, { PROCESSOR_MODULE: writeModule(dir, source), RETRY_BACKOFF_MS: '0', ...settings })
  return { app, dir }
}

async function getOrder (app: FastifyInstance, id: string) {
  return (await app.inject({ url: `/orders/${id}` })).json()
}

async function create (t: Test, app: FastifyInstance, ...ids: string[]): Promise<void> {
  for (const id of ids) t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder(id) })).statusCode, 201)
}

async function settled (app: FastifyInstance, id: string, status = 'Completed') {
  return waitFor(async () => {
    const order = await getOrder(app, id)
    return order.status === status && order
  }, `${id} to be ${status}`, 30_000)
}

t.test('the module gets the order as GET shows it, its attempt and signal; what it returns is the order\'s result from the moment it is Completed', async (t) => {
  const { app } = await appWithModule(t, `
    export default async (order, { signal, attempt, log }) => {
      log.info('fulfilling')
      return { seen: order, attempt, signal: signal instanceof AbortSignal && !signal.aborted, tracking_id: 'TRK-' + order.order_id }
    }
  `)
  // GET as each completion is announced: the result is written with it.
  const atCompletion: Array<Promise<unknown>> = []
  t.teardown(app.store.onChanges((changes) => { for (const c of changes) atCompletion.push(getOrder(app, c.order_id)) }, ['Completed']))
  await create(t, app, 'ship-1')
  const done = await settled(app, 'ship-1')
  t.match(done, { status: 'Completed', attempts: 1, last_error: null, result: { attempt: 1, signal: true, tracking_id: 'TRK-ship-1' } })
  t.same(done.result.seen, {
    ...done,
    status: 'Processing',
    completed_at: null,
    updated_at: done.processing_started_at,
    processing_duration: null,
    total_duration: null,
    result: null
  }, 'the order as GET showed it once claimed')
  await waitFor(() => atCompletion.length === 1, 'the completion to be announced')
  t.match(await atCompletion[0], { status: 'Completed', result: { tracking_id: 'TRK-ship-1' } }, 'GET shows the result as soon as the order is Completed')
  const listed = (await app.inject({ url: '/orders?status=Completed' })).json()
  t.match(listed.orders, [{ order_id: 'ship-1', result: { tracking_id: 'TRK-ship-1' } }], 'lists show it too')
})

t.test('an error with retryable === false fails the order at once; other errors are retried', async (t) => {
  const { app } = await appWithModule(t, `
    export default async (order, { attempt }) => {
      if (order.order_id === 'declined') throw Object.assign(new Error('card declined: insufficient funds'), { retryable: false })
      if (attempt < 3) throw new Error('fulfilment API answered 503')
      return 'third time lucky'
    }
  `, { MAX_ATTEMPTS: '3' })
  await create(t, app, 'declined', 'flaky')
  t.match(await settled(app, 'declined', 'Failed'), { attempts: 1, last_error: 'card declined: insufficient funds', result: null })
  t.match(await settled(app, 'flaky'), { attempts: 3, last_error: null, result: 'third time lucky' })
})

t.test('past ATTEMPT_TIMEOUT_MS the signal aborts and the attempt fails, to be retried, even when the module ignores its signal', async (t) => {
  const { app, dir } = await appWithModule(t, `
    import { writeFileSync } from 'node:fs'
    import { setTimeout as sleep } from 'node:timers/promises'
    export default async (order, { signal, attempt }) => {
      // The order as GET shows it tells why the attempt before failed.
      if (attempt > 1) return { attempt, after: order.last_error }
      if (order.order_id === 'waits') {
        // Waits on its signal, as fetch does, and records why it aborted.
        await new Promise((resolve, reject) => signal.addEventListener('abort', () => {
          writeFileSync(new URL('aborted-' + order.order_id, import.meta.url), signal.reason.name + ': ' + signal.reason.message)
          reject(signal.reason)
        }))
      }
      // Ignores its signal and returns long after the deadline, then says so.
      await sleep(1000)
      writeFileSync(new URL('returned-late-' + order.order_id, import.meta.url), 'late')
      return 'late'
    }
  `, { ATTEMPT_TIMEOUT_MS: '200' })
  await create(t, app, 'waits', 'ignores')
  const retried = { attempts: 2, last_error: null, result: { attempt: 2, after: 'attempt timed out after 200 ms' } }
  for (const id of ['waits', 'ignores']) t.match(await settled(app, id), retried, `${id}: timed out, then completed on the retry`)
  t.equal(readFileSync(join(dir, 'aborted-waits'), 'utf8'), 'TimeoutError: attempt timed out after 200 ms', 'its signal aborted with the reason')
  await waitFor(() => existsSync(join(dir, 'returned-late-ignores')), 'the attempt that ignored its signal to return')
  t.match(await getOrder(app, 'ignores'), retried, 'its late return changed nothing')
})

t.test('SQLite: an attempt three times as long as LEASE_MS keeps its lease; no recovery takes it', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const path = join(dir, 'orders.db')
  const { app } = await appWithModule(t, `
    import { setTimeout as sleep } from 'node:timers/promises'
    export default async (order, { signal }) => {
      await sleep(3000, undefined, { signal })
      return 'long done'
    }
  `, { DATABASE_URL: `sqlite:${path}`, LEASE_MS: '1000' })
  // Another connection to the file looks for expired leases, as another process would, holding no claim.
  const other = new SqliteStore(path)
  t.teardown(() => other.close())
  const reader = new Database(path, { readonly: true })
  t.teardown(() => reader.close())
  const leaseUntil = reader.prepare('SELECT lease_until FROM orders WHERE order_id = ?').pluck()
  const leases = new Set<number>()
  await create(t, app, 'long')
  const done = await waitFor(async () => {
    if (await other.recoverExpired(Date.now(), 3, []) > 0) throw new Error('a live attempt was taken over')
    const lease = leaseUntil.get('long') as number | null
    if (lease !== null) leases.add(lease)
    const order = await getOrder(app, 'long')
    return order.status === 'Completed' && order
  }, 'the long attempt to end')
  t.match(done, { attempts: 1, result: 'long done' })
  t.ok(done.processing_duration >= 3, `it outlasted three leases (${done.processing_duration} s)`)
  t.ok(leases.size >= 4, `its lease was renewed while it ran (${leases.size} different ends seen)`)
})

/**
 * The module the tests' processes run. What an attempt does depends on the order id's first word,
 * on the first attempt; any other attempt returns at once. It leaves marks beside itself
 * (`<order>.<attempt>.started` holding the process id, and so on) for the test to read.
 */
const PROCESS_MODULE = `
  import { existsSync, renameSync, writeFileSync } from 'node:fs'
  import { setTimeout as sleep } from 'node:timers/promises'
  // Written whole, then renamed: a test that read the file between its creation and its write
  // read an empty mark (seen once in CI).
  const mark = (name, text) => {
    const whole = new URL(name + '.partial', import.meta.url)
    writeFileSync(whole, String(text))
    renameSync(whole, new URL(name, import.meta.url))
  }
  const LEASE_MS = Number(process.env.LEASE_MS)

  export default async (order, { signal, attempt, log }) => {
    log.warn('attempt started')
    mark(order.order_id + '.' + attempt + '.started', process.pid)
    const kind = order.order_id.split('-')[0]
    if (attempt === 1) {
      if (kind === 'long') await sleep(3 * LEASE_MS, undefined, { signal })
      // Until the test has thawed its process: on a loaded machine a second worker took over 6 s to
      // start, and an attempt of a fixed length had ended before its process was frozen.
      if (kind === 'frozen') while (!existsSync(new URL(order.order_id + '.thawed', import.meta.url))) await sleep(20)
      // Never ends by itself: it is killed, or it ignores its signal.
      if (kind === 'doomed' || kind === 'ignores') await new Promise(() => {})
      if (kind === 'honours') {
        await new Promise((resolve, reject) => signal.addEventListener('abort', () => {
          mark(order.order_id + '.aborted', signal.reason.message)
          reject(signal.reason)
        }))
      }
    }
    mark(order.order_id + '.' + attempt + '.returned', process.pid)
    return { pid: process.pid, attempt }
  }
`

/** A directory with PROCESS_MODULE in it, a reader of the marks it leaves, and a writer of marks for it. */
function processModule (t: Test): { path: string, mark: (name: string) => string | undefined, put: (name: string) => void } {
  const dir = tempDir(t)
  const path = writeModule(dir, PROCESS_MODULE)
  return { path, mark: (name) => existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8') : undefined, put: (name) => writeFileSync(join(dir, name), '') }
}

/** A worker or a server, killed when the test ends if it is still there. */
async function started (t: Test, start: Promise<ServerProcess>): Promise<ServerProcess> {
  const proc = await start
  t.teardown(() => { if (proc.child.exitCode === null) proc.child.kill('SIGKILL') })
  return proc
}

/**
 * Two worker processes on one PostgreSQL database, each one attempt at a time, with a short lease
 * (renewed every 667 ms, a second to land): the first has started the first attempt at order `id`
 * when the second starts.
 */
async function twoWorkers (t: Test, id: string) {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const store = await openPgStore(database.url)
  t.teardown(() => store.close())
  const { path, mark, put } = processModule(t)
  const env = {
    DATABASE_URL: database.url,
    PROCESSOR_MODULE: path,
    PENDING_DELAY_MS: '0',
    PROCESSOR_CONCURRENCY: '1',
    LEASE_MS: '2000',
    DATABASE_TIMEOUT_MS: '1000',
    RETRY_BACKOFF_MS: '0'
  }
  const first = await started(t, ServerProcess.startWorker(env))
  await store.create(anOrder(id), Date.now(), Date.now())
  await waitFor(() => mark(`${id}.1.started`), 'the first worker to start the attempt')
  t.equal(mark(`${id}.1.started`), String(first.child.pid), 'the first worker started it')
  const second = await started(t, ServerProcess.startWorker(env))
  return { store, mark, put, first, second }
}

async function storedOrder (store: OrderStore, id: string, status = 'Completed'): Promise<OrderRecord> {
  return waitFor(async () => {
    const order = await store.get(id)
    return order?.status === status && order
  }, `${id} to be ${status}`, 60_000)
}

t.test('PostgreSQL: an attempt three times as long as LEASE_MS stays with its worker while a second worker runs', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, mark, first, second } = await twoWorkers(t, 'long-1')
  // The first worker is busy: the second takes these, and looks for expired leases every second meanwhile.
  const shorts = ['short-1', 'short-2', 'short-3']
  await store.createMany(shorts.map((id) => anOrder(id)), Date.now(), Date.now())
  const long = await storedOrder(store, 'long-1')
  t.match(long, { attempts: 1, last_error: null })
  t.same(JSON.parse(long.result as string), { pid: first.child.pid, attempt: 1 }, 'completed by the worker that started it')
  t.ok((long.completed_at as number) - (long.processing_started_at as number) >= 6000, 'after three leases')
  t.equal(mark('long-1.2.started'), undefined, 'never attempted again')
  // Each short order done once; the second worker, running beside the long attempt, did some. Which
  // did each is not asserted: in 2 of 7 PostgreSQL runs on 2026-12-03 (alone it passed 3 of 3) the
  // second worker claimed nothing for ~6 s and the first took two of them once its long attempt
  // ended, not yet explained (issue 20's note).
  const doneBy = await Promise.all(shorts.map(async (id) => JSON.parse((await storedOrder(store, id)).result as string) as { pid: number, attempt: number }))
  t.ok(doneBy.every(({ pid, attempt }) => attempt === 1 && (pid === first.child.pid || pid === second.child.pid)), `each short order done once: ${JSON.stringify(doneBy)}`)
  // Should it fail, the workers' logs (info and above) go with the failure, to tell why the second idled.
  t.ok(doneBy.some(({ pid }) => pid === second.child.pid), 'the second worker did some of them',
    { secondWorkerLog: second.output.slice(-6000), firstWorkerLog: first.output.slice(-3000) })
  t.match(first.output, '"order_id":"long-1","attempt":1,"msg":"attempt started"', 'the module\'s log names the order and the attempt')
  t.equal(await second.stop('SIGTERM'), 0)
  t.equal(await first.stop('SIGTERM'), 0)
})

t.test('PostgreSQL: a worker killed mid-attempt loses the order to the other worker after LEASE_MS', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, first, second } = await twoWorkers(t, 'doomed-1')
  t.equal(await first.stop('SIGKILL'), null, 'killed')
  const done = await storedOrder(store, 'doomed-1')
  t.match(done, { attempts: 2, last_error: null })
  t.same(JSON.parse(done.result as string), { pid: second.child.pid, attempt: 2 }, 'taken over by the other worker')
  t.equal(await second.stop('SIGTERM'), 0)
})

t.test('PostgreSQL: a worker frozen mid-attempt loses the order; once thawed, its late outcome is refused', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, mark, put, first, second } = await twoWorkers(t, 'frozen-1')
  first.child.kill('SIGSTOP')
  const done = await storedOrder(store, 'frozen-1')
  t.same(JSON.parse(done.result as string), { pid: second.child.pid, attempt: 2 }, 'taken over by the other worker')
  first.child.kill('SIGCONT')
  put('frozen-1.thawed')
  await waitFor(() => mark('frozen-1.1.returned'), 'the thawed attempt to return')
  // Stopping settles what it has finished: its outcome is refused by the claim token (a settle
  // that failed would leave the order as it is too, hence the look at the log).
  t.equal(await first.stop('SIGTERM'), 0)
  t.match(await store.get('frozen-1'), { status: 'Completed', attempts: 2, result: done.result })
  t.notMatch(first.output, 'processor failed while settling orders', 'the thawed worker\'s settle ran without error')
  t.equal(await second.stop('SIGTERM'), 0)
})

t.test('SQLite: a service killed mid-attempt; the restarted one takes the order over after LEASE_MS', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const { path, mark } = processModule(t)
  const env = { DATABASE_URL: `sqlite:${join(tempDir(t), 'orders.db')}`, PROCESSOR_MODULE: path, PENDING_DELAY_MS: '0', LEASE_MS: '1000' }
  const first = await started(t, ServerProcess.start(env))
  t.equal((await first.request('/orders', anOrder('doomed-1'))).status, 201)
  await waitFor(() => mark('doomed-1.1.started'), 'the attempt to start')
  t.equal(await first.stop('SIGKILL'), null, 'killed')
  const second = await started(t, ServerProcess.start(env))
  const done = await waitFor(async () => {
    const { json } = await second.request('/orders/doomed-1')
    return json.status === 'Completed' && json
  }, 'the restarted service to complete it', 30_000)
  t.match(done, { attempts: 2, last_error: null, result: { pid: second.child.pid, attempt: 2 } })
  t.equal(await second.stop('SIGTERM'), 0)
})

/**
 * SIGTERM while one attempt waits on its signal and another ignores it: both are aborted after
 * the grace period, handed back uncounted, and the process exits 0.
 */
async function stopAborts (t: Test, proc: ServerProcess, mark: (name: string) => string | undefined, read: (id: string) => Promise<unknown>): Promise<void> {
  await waitFor(() => mark('honours-1.1.started') && mark('ignores-1.1.started'), 'both attempts to start')
  t.equal(await proc.stop('SIGTERM'), 0, 'exit 0')
  t.equal(mark('honours-1.aborted'), 'the service is shutting down', 'the attempt waiting on its signal saw it abort')
  for (const id of ['honours-1', 'ignores-1']) {
    t.match(await read(id), { status: 'Pending', attempts: 0, last_error: null, result: null }, `${id}: handed back, the attempt not counted`)
    t.equal(mark(`${id}.1.returned`), undefined)
  }
}

t.test('SQLite: at shutdown, attempts running past SHUTDOWN_GRACE_MS are aborted and handed back uncounted', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const { path, mark } = processModule(t)
  const database = join(tempDir(t), 'orders.db')
  const server = await started(t, ServerProcess.start({ DATABASE_URL: `sqlite:${database}`, PROCESSOR_MODULE: path, PENDING_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '300' }))
  for (const id of ['honours-1', 'ignores-1']) t.equal((await server.request('/orders', anOrder(id))).status, 201)
  // Read once the server has exited.
  let store: SqliteStore | undefined
  t.teardown(() => store?.close())
  await stopAborts(t, server, mark, (id) => (store ??= new SqliteStore(database)).get(id))
})

t.test('PostgreSQL: at shutdown, a worker aborts the attempts running past SHUTDOWN_GRACE_MS and hands them back uncounted', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const store = await openPgStore(database.url)
  t.teardown(() => store.close())
  const { path, mark } = processModule(t)
  const worker = await started(t, ServerProcess.startWorker({ DATABASE_URL: database.url, PROCESSOR_MODULE: path, PENDING_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '300' }))
  await store.createMany([anOrder('honours-1'), anOrder('ignores-1')], Date.now(), Date.now())
  await stopAborts(t, worker, mark, (id) => store.get(id))
})

t.test('the processing step page\'s example module, run by `npm start`: tracking ids kept, a 4xx fails at once, a 503 is retried', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  // A fulfilment service: 422 for one order, 503 once for another, else a tracking id.
  const received: Array<{ key: string | undefined, body: { order_id: string } }> = []
  const fulfilment = createServer((req, res) => {
    let text = ''
    req.on('data', (chunk) => { text += chunk })
    req.on('end', () => {
      const body = JSON.parse(text)
      received.push({ key: req.headers['idempotency-key'] as string | undefined, body })
      const id: string = body.order_id
      const tries = received.filter((r) => r.body.order_id === id).length
      if (id === 'bad-1') res.writeHead(422).end('unknown item 101')
      else if (id === 'busy-1' && tries === 1) res.writeHead(503).end('busy')
      else res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ tracking_id: `TRK-${id}` }))
    })
  }).listen(0, '127.0.0.1')
  await once(fulfilment, 'listening')
  t.teardown(() => { fulfilment.close() })
  const server = await ServerProcess.startWithNpm({
    PROCESSOR_MODULE: 'docs/examples/fulfilment.mjs',
    FULFILMENT_URL: `http://127.0.0.1:${(fulfilment.address() as { port: number }).port}/orders`,
    DATABASE_URL: 'sqlite::memory:',
    PENDING_DELAY_MS: '0',
    RETRY_BACKOFF_MS: '0'
  })
  t.teardown(() => server.killGroup())
  for (const id of ['ok-1', 'bad-1', 'busy-1']) t.equal((await server.request('/orders', anOrder(id))).status, 201)
  const order = async (id: string, status: string) => waitFor(async () => {
    const { json } = await server.request(`/orders/${id}`)
    return json.status === status && json
  }, `${id} to be ${status}`)
  t.match(await order('ok-1', 'Completed'), { attempts: 1, result: { tracking_id: 'TRK-ok-1' } })
  t.match(await order('bad-1', 'Failed'), { attempts: 1, last_error: 'fulfilment answered 422 on attempt 1: unknown item 101', result: null })
  t.match(await order('busy-1', 'Completed'), { attempts: 2, result: { tracking_id: 'TRK-busy-1' } })
  t.match(received.find((r) => r.body.order_id === 'ok-1'), { key: 'ok-1', body: { order_id: 'ok-1', user_id: 1, item_ids: [101, 102, 103], total_amount: 59.99 } })
  server.signalGroup('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('the processing step page\'s example module refuses to start without FULFILMENT_URL, in one line', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const server = runToEnd([process.execPath, 'dist/src/server.js'], { PROCESSOR_MODULE: 'docs/examples/fulfilment.mjs', FULFILMENT_URL: '', DATABASE_URL: 'sqlite::memory:' })
  t.same([server.status, server.stderr], [1, 'Invalid configuration: PROCESSOR_MODULE (docs/examples/fulfilment.mjs) could not be loaded: FULFILMENT_URL is not set\n'])
})
