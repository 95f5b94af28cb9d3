import t from 'tap'
import { HISTORY_SECONDS } from '../../src/per-second-history.ts'
import { anOrder, build, waitFor } from '../helper.ts'
import { createDatabase, SKIP_POSTGRES } from '../support/pg-database.ts'

interface Completions { from: string, completed: number[] }
const sum = (counts: number[]) => counts.reduce((total, n) => total + n, 0)

t.test('GET /orders/metrics/completions counts each completion at its second over the last five minutes', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const { store } = app
  const first = await app.inject({ url: '/orders/metrics/completions' })
  t.equal(first.statusCode, 200)
  const empty = first.json() as Completions
  t.equal(empty.completed.length, HISTORY_SECONDS)
  t.equal(sum(empty.completed), 0)

  // Completed 10 s and 200 s ago (the store records the time it is given), and one cancelled.
  const now = Date.now()
  for (const id of ['c1', 'c2', 'c3', 'x']) await store.create(anOrder(id), now - 300_000, now - 300_000)
  await store.cancel('x', now - 250_000)
  const claims = await store.claim(3, now - 250_000, 600_000)
  await store.settle(claims.slice(0, 2).map((claim) => ({ claim, ok: true as const })), now - 10_000)
  await store.settle([{ claim: claims[2]!, ok: true }], now - 200_000)
  const body = await waitFor(async () => {
    const answer = (await app.inject({ url: '/orders/metrics/completions/' })).json() as Completions
    return sum(answer.completed) === 3 && answer
  }, 'the completions to be counted')
  const slot = (at: number) => Math.floor(at / 1000) - Date.parse(body.from) / 1000
  t.equal(body.completed[slot(now - 10_000)], 2, 'two at their second')
  t.equal(body.completed[slot(now - 200_000)], 1, 'one at its second')
  t.match(body.from, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/, 'from a whole second')
})

t.test('orders processed by the service are counted; the answer is the same small size however many', async (t) => {
  const app = await build(t, { PROCESSING_TIME_MS: '0' })
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 250 } })
  await waitFor(async () => (await app.store.stats()).counts.Completed === 250, 'every order to complete')
  const body = await waitFor(async () => {
    const answer = (await app.inject({ url: '/orders/metrics/completions' })).json() as Completions
    return sum(answer.completed) === 250 && answer
  }, 'every completion to be counted')
  t.ok(JSON.stringify(body).length < 2000, `${JSON.stringify(body).length} bytes`)
})

t.test('on PostgreSQL an API process that processes nothing counts the completions of the others', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(() => database.drop())
  const api = await build(t, { DATABASE_URL: database.url, PROCESSOR: 'off' })
  const worker = await build(t, { DATABASE_URL: database.url, PROCESSING_TIME_MS: '0' })
  for (const id of ['w1', 'w2', 'w3']) await api.inject({ method: 'POST', url: '/orders', payload: anOrder(id) })
  await waitFor(async () => (await api.store.stats()).counts.Completed === 3, 'the worker to complete them')
  for (const app of [api, worker]) {
    await waitFor(async () => sum(((await app.inject({ url: '/orders/metrics/completions' })).json() as Completions).completed) === 3,
      'every process to count the three completions')
  }
  t.pass('both processes counted the three completions')
})
