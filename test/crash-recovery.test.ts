import { join } from 'node:path'
import t from 'tap'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { ServerProcess } from './support/server-process.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

const env = (dir: string) => ({
  DATABASE_URL: `sqlite:${join(dir, 'orders.db')}`,
  PENDING_DELAY_MS: '0',
  PROCESSING_TIME_MS: '100-300',
  PROCESSOR_CONCURRENCY: '200',
  LEASE_MS: '1000',
  SHUTDOWN_GRACE_MS: '5000'
})

async function metrics (server: ServerProcess) {
  return (await server.request('/orders/metrics')).json
}

t.test('after kill -9 mid-processing and a restart, every answered order completes', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const first = await ServerProcess.start(env(dir))
  t.teardown(() => { first.child.kill('SIGKILL') })
  const populated = await first.request('/orders/populate', { total_entries: 2000, batch_id: 'crash' })
  t.equal(populated.status, 201)
  const answered: string[] = []
  for (let i = 0; i < 50; i++) {
    const res = await first.request('/orders', anOrder(`single-${i}`))
    if (res.status === 201) answered.push(`single-${i}`)
  }
  t.equal(answered.length, 50)
  await waitFor(async () => {
    const m = await metrics(first)
    return m.completed.count > 0 && m.processing.count > 0
  }, 'orders both completed and in flight')
  t.equal(await first.stop('SIGKILL'), null, 'killed, not exited')

  const second = await ServerProcess.start(env(dir))
  t.teardown(() => { second.child.kill('SIGKILL') })
  const done = await waitFor(async () => {
    const m = await metrics(second)
    return m.completed.count === 2050 && m
  }, 'every order completed after the restart', 60_000)
  t.equal(done.total_orders, 2050, 'no order was lost')
  t.equal(done.pending.count + done.processing.count + done.failed.count, 0, 'none is stuck')
  for (const id of answered) {
    const res = await second.request(`/orders/${id}`)
    t.equal(res.json.status, 'Completed', `${id} completed`)
  }
  let retried = 0
  for (let cursor: string | null = ''; cursor !== null;) {
    const page: { orders: Array<{ attempts: number }>, next_cursor: string | null } = (await second.request(`/orders?limit=1000&status=Completed${cursor && `&cursor=${encodeURIComponent(cursor)}`}`)).json
    retried += page.orders.filter((o) => o.attempts > 1).length
    cursor = page.next_cursor
  }
  t.ok(retried > 0, `orders in flight at the kill were processed again (${retried})`)
  t.equal(await second.stop('SIGTERM'), 0)
})

t.test('SIGTERM finishes in-flight orders and exits 0; nothing is left Processing', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const server = await ServerProcess.start(env(dir))
  t.teardown(() => { server.child.kill('SIGKILL') })
  await server.request('/orders/populate', { total_entries: 500, batch_id: 'term' })
  await waitFor(async () => (await metrics(server)).processing.count > 0, 'orders in flight')
  t.equal(await server.stop('SIGTERM'), 0, 'exit code 0')

  const after = await ServerProcess.start({ ...env(dir), PROCESSOR: 'off' })
  t.teardown(() => { after.child.kill('SIGKILL') })
  const m = await metrics(after)
  t.equal(m.total_orders, 500)
  t.equal(m.processing.count, 0, 'in-flight orders were finished or handed back')
  t.ok(m.completed.count > 0)
  t.equal(await after.stop('SIGINT'), 0, 'SIGINT exits 0 too')
})

// Before answers sent while closing ended their connections, this exited 1 after 8 s in most runs:
// a connection whose request was under way at the close stayed open, idle, after its answer.
t.test('SIGTERM under load: every request answered 201 is kept, and the process exits 0 in time', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const server = await ServerProcess.start({ ...env(dir), SHUTDOWN_GRACE_MS: '3000' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  // 20 clients send orders one after another until the server stops answering.
  const answers: Array<{ id: string, status: number }> = []
  let next = 0
  const client = async () => {
    for (;;) {
      const id = `load-${next++}`
      const status = await server.request('/orders', anOrder(id)).then((res) => res.status, () => 0)
      answers.push({ id, status })
      if (status !== 201) return
    }
  }
  const clients = Promise.all(Array.from({ length: 20 }, client))
  await waitFor(() => answers.length >= 200, 'load under way')
  const started = Date.now()
  const code = await server.stop('SIGTERM')
  t.equal(code, 0, 'exit code 0')
  t.ok(Date.now() - started < 3000 + 5000, 'within the grace period')
  await clients
  const created = answers.filter((a) => a.status === 201).map((a) => a.id)
  t.ok(answers.every((a) => a.status === 201 || a.status === 0 || a.status === 503), 'each request was answered 201 or refused')

  const after = await ServerProcess.start({ ...env(dir), PROCESSOR: 'off' })
  t.teardown(() => { after.child.kill('SIGKILL') })
  t.ok(created.length > 0, `${created.length} of ${answers.length} requests were answered 201`)
  const missing: string[] = []
  for (const id of created) if ((await after.request(`/orders/${id}`)).status !== 200) missing.push(id)
  t.same(missing, [], 'every order answered 201 is kept')
  t.equal(await after.stop('SIGTERM'), 0)
})
