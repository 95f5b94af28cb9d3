import t from 'tap'
import { waitFor } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES } from './support/pg-database.ts'
import { ServerProcess } from './support/server-process.ts'
import { allOrders, recount } from './support/store-contract.ts'

const TOTAL = 3000

t.test('one API process and three workers on PostgreSQL; a worker is killed mid-run', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const processes: ServerProcess[] = []
  t.teardown(async () => {
    for (const p of processes) p.child.kill('SIGKILL')
    await database.drop()
  })
  // A short lease, so that the killed worker's orders are taken over soon; renewed every 667 ms, with a second to land.
  const shared = { DATABASE_URL: database.url, PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '50-150', LEASE_MS: '2000', DATABASE_TIMEOUT_MS: '1000' }
  const api = await ServerProcess.start({ ...shared, PROCESSOR: 'off' })
  processes.push(api)
  const workerEnv = { ...shared, PROCESSOR_CONCURRENCY: '50' }
  const workers = await Promise.all([1, 2, 3].map(() => ServerProcess.startWorker(workerEnv)))
  processes.push(...workers)

  const populated = await api.request('/orders/populate', { total_entries: TOTAL, batch_id: 'scale' })
  t.equal(populated.status, 201)
  await waitFor(async () => (await api.request('/orders/metrics')).json.completed.count >= 300, 'work under way')
  t.equal(await workers[0]!.stop('SIGKILL'), null, 'a worker was killed')

  const metrics = await waitFor(async () => {
    const m = (await api.request('/orders/metrics')).json
    return m.completed.count === TOTAL && m
  }, 'every order completed by the surviving workers', 90_000)
  t.match(metrics, {
    total_orders: TOTAL,
    pending: { count: 0 },
    processing: { count: 0 },
    failed: { count: 0 },
    completed: { count: TOTAL }
  })

  const store = await openPgStore(database.url)
  t.teardown(() => store.close())
  // Completing is conditional on the claim token, and every completion adds one to the aggregate
  // in the same transaction: an order completed twice would make the aggregate exceed the recount.
  const counted = await recount(store)
  t.same(await store.stats(), counted, '/orders/metrics equals a full recount')
  t.equal(counted.counts.Completed, TOTAL, 'each order completed exactly once')
  const takenOver = (await allOrders(store)).filter((order) => order.attempts > 1).length
  t.ok(takenOver > 0, `orders held by the killed worker were taken over (${takenOver})`)

  for (const worker of workers.slice(1)) t.equal(await worker.stop('SIGTERM'), 0, 'a worker exits 0 on SIGTERM')
  t.equal(await api.stop('SIGTERM'), 0)
})
