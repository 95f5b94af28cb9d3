import { join } from 'node:path'
import t from 'tap'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { buildApp } from '../../src/app.ts'
import { anOrder, build, tempDir, testConfig, waitFor } from '../helper.ts'
import { createDatabase, POSTGRES_URL } from '../support/pg-database.ts'

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

t.test('GET /processing, POST /processing/pause and /resume: the state, since when, and nothing changes when it already is', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const initial = await app.inject({ url: '/processing' })
  t.equal(initial.statusCode, 200)
  t.match(initial.json(), { state: 'running', since: ISO_MS })

  const before = Date.now()
  const paused = await app.inject({ method: 'POST', url: '/processing/pause' })
  t.equal(paused.statusCode, 200)
  t.equal(paused.json().state, 'paused')
  t.ok(Date.parse(paused.json().since) >= before, 'since the pause')
  const again = await app.inject({ method: 'POST', url: '/processing/pause/', headers: { 'content-type': 'application/json' }, payload: '{}' })
  t.same([again.statusCode, again.json()], [200, paused.json()], 'pausing again changes nothing, since included')
  t.same((await app.inject({ url: '/processing' })).json(), paused.json())
  t.equal((await app.inject({ url: '/orders/metrics' })).json().processing_state, 'paused')
  t.equal(await pausedGauge(app), 1)

  const resumed = await app.inject({ method: 'POST', url: '/processing/resume' })
  t.equal(resumed.statusCode, 200)
  t.equal(resumed.json().state, 'running')
  t.ok(resumed.json().since >= paused.json().since)
  t.same((await app.inject({ method: 'POST', url: '/processing/resume' })).json(), resumed.json(), 'resuming a running service changes nothing')
  t.equal((await app.inject({ url: '/orders/metrics' })).json().processing_state, 'running')
  t.equal(await pausedGauge(app), 0)

  const form = await app.inject({ method: 'POST', url: '/processing/pause', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1' })
  t.equal(form.statusCode, 415, 'a body that is not JSON')
  t.equal((await app.inject({ url: '/processing' })).json().state, 'running', 'changed nothing')
})

async function pausedGauge (app: Awaited<ReturnType<typeof build>>): Promise<number> {
  const families = parsePrometheusTextFormat((await app.inject({ url: '/metrics' })).body) as Array<{ name: string, type: string, metrics: Array<{ value: string }> }>
  const gauge = families.find((f) => f.name === 'processing_paused')
  return gauge?.type === 'GAUGE' ? Number(gauge.metrics[0]?.value) : NaN
}

t.test('while paused, new orders are taken and wait as Pending; resumed, they are processed', async (t) => {
  const app = await build(t, { PROCESSING_TIME_MS: '0' })
  const statuses: string[] = []
  t.teardown(app.store.onChanges((changes) => { for (const c of changes) statuses.push(`${c.order_id}:${c.status}`) }))
  await app.inject({ method: 'POST', url: '/processing/pause' })
  for (const id of ['W1', 'W2']) t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder(id) })).statusCode, 201)
  // A claim after the pause takes nothing, whatever the processor's timing: let one go through.
  t.same(await app.store.claim(10, Date.now(), 30_000), [])
  // On PostgreSQL changes are heard when their NOTIFY arrives.
  await waitFor(() => statuses.length >= 2, 'the creates to be heard')
  t.same(statuses, ['W1:Pending', 'W2:Pending'])
  await app.inject({ method: 'POST', url: '/processing/resume' })
  await waitFor(async () => (await app.store.stats()).counts.Completed === 2, 'both orders processed after the resume')
})

t.test('the processing state survives a restart of the service', async (t) => {
  const database = POSTGRES_URL ? await createDatabase() : undefined
  t.teardown(async () => { await database?.drop() })
  const config = testConfig({ DATABASE_URL: database?.url ?? `sqlite:${join(tempDir(t), 'orders.db')}`, PROCESSING_TIME_MS: '0' })

  const first = await buildApp(config, { logger: false })
  await first.ready()
  const paused = (await first.inject({ method: 'POST', url: '/processing/pause' })).json()
  await first.inject({ method: 'POST', url: '/orders', payload: anOrder('kept') })
  await first.close()

  const second = await buildApp(config, { logger: false })
  t.teardown(() => second.close())
  await second.ready()
  t.same((await second.inject({ url: '/processing' })).json(), paused, 'still paused, since the same time')
  t.same(await second.store.claim(10, Date.now(), 30_000), [], 'claims still take nothing')
  t.equal((await second.store.get('kept'))?.status, 'Pending')
  await second.inject({ method: 'POST', url: '/processing/resume' })
  await waitFor(async () => (await second.store.get('kept'))?.status === 'Completed', 'the order processed once resumed')
})
