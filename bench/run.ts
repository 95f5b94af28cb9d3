import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { ServerProcess } from '../test/support/server-process.ts'
import { waitFor } from '../test/helper.ts'
import { createDatabase } from '../test/support/pg-database.ts'
import { memoryMb, tempDatabase } from './process-facts.ts'
import { openStreams } from './event-streams.ts'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    rounds: { type: 'string' }
  }
})

/** PostgreSQL scenarios make a database of their own on this server. */
const POSTGRES_SERVER = process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : 'postgres://postgres@127.0.0.1:5432/postgres'

const QUICK = args.quick
const ROUNDS = Number(args.rounds ?? (QUICK ? 1 : 3))
const DURATION_S = QUICK ? 3 : 8
const CONNECTIONS = 100
const SCENARIOS = ['post', 'get', 'metrics', 'throughput', 'delays', 'populate', 'pg-post', 'pg-metrics', 'pg-workers', 'post-streams'] as const
type Scenario = typeof SCENARIOS[number]
const selected = new Set((args.only?.split(',') ?? SCENARIOS) as Scenario[])
for (const name of selected) if (!SCENARIOS.includes(name)) throw new Error(`unknown scenario ${name}; pick from ${SCENARIOS.join(', ')}`)

const ZERO_DELAY = { PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', LOG_LEVEL: 'warn' }
const BASELINE = 'bench/baseline-server.ts'
/** Servers run on this core; `npm run bench` puts the load generator on core 0. */
const SERVER_CPU = 1

interface Row { scenario: string, figure: string, value: number, target: string, pass: boolean | null, note?: string }
const rows: Row[] = []

/** A fresh PostgreSQL database for one scenario, dropped afterwards. */
async function withPostgres (run: (url: string) => Promise<void>): Promise<void> {
  const database = await createDatabase(POSTGRES_SERVER)
  try {
    await run(database.url)
  } finally {
    await database.drop()
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

type Load = Partial<autocannon.Options> & { path?: string }

async function load (url: string, { path = '', ...options }: Load): Promise<number> {
  const result = await autocannon({ url: `${url}${path}`, connections: CONNECTIONS, duration: DURATION_S, ...options })
  const bad = result.errors + result.timeouts + result.non2xx
  if (bad > 0) throw new Error(`${bad} failed requests against ${url}${path}`)
  return result.requests.average
}

/** Alternates baseline and service rounds so both see the same machine, and returns the medians. */
async function compare (
  name: string, target: number | null, service: ServerProcess, baseline: ServerProcess,
  options: (round: number) => Load
): Promise<void> {
  const ours: number[] = []
  const theirs: number[] = []
  // A short warm-up lets both JIT-compile their hot paths before anything is counted.
  for (const server of [baseline, service]) {
    const { path = '', ...warmUp } = options(-1)
    await autocannon({ ...warmUp, url: `${server.url}${path}`, connections: 10, duration: 1 })
  }
  for (let round = 0; round < ROUNDS; round++) {
    theirs.push(await load(baseline.url, options(round)))
    ours.push(await load(service.url, options(round)))
  }
  const ratio = median(ours) / median(theirs)
  rows.push({ scenario: name, figure: 'service req/s', value: Math.round(median(ours)), target: '', pass: null })
  rows.push({ scenario: name, figure: 'baseline req/s', value: Math.round(median(theirs)), target: '', pass: null })
  rows.push({
    scenario: name, figure: 'ratio', value: Math.round(ratio * 100) / 100,
    target: target === null ? '' : `>= ${target}`, pass: target === null ? null : ratio >= target
  })
}

async function populate (server: ServerProcess, total: number, batchId: string): Promise<number> {
  const started = performance.now()
  const res = await server.request('/orders/populate', { total_entries: total, batch_id: batchId })
  if (res.status !== 201 || res.json.success_count !== total) throw new Error(`populate failed: ${JSON.stringify(res.json)}`)
  return (performance.now() - started) / 1000
}

async function completedCount (server: ServerProcess): Promise<number> {
  return (await server.request('/orders/metrics')).json.completed.count
}

async function withServers<T> (env: Record<string, string>, run: (service: ServerProcess, baseline: ServerProcess) => Promise<T>): Promise<T> {
  const [service, baseline] = await Promise.all([
    ServerProcess.start({ DATABASE_URL: tempDatabase(), ...env }, undefined, SERVER_CPU),
    ServerProcess.start({}, BASELINE, SERVER_CPU)
  ])
  try {
    return await run(service, baseline)
  } finally {
    await Promise.all([service.stop('SIGKILL'), baseline.stop('SIGKILL')])
  }
}

/** POST /orders with a unique order id per request, the ids of one run starting with `prefix`. */
const createOrders = (prefix: string): Load => ({
  method: 'POST',
  path: '/orders',
  headers: { 'content-type': 'application/json' },
  // [<id>] is replaced by a unique id per request.
  body: JSON.stringify({ user_id: 7, order_id: `${prefix}-[<id>]`, item_ids: [1, 2, 3], total_amount: 59.99 }),
  idReplacement: true
})

const scenarios: Record<Scenario, () => Promise<void>> = {
  async post () {
    await withServers(ZERO_DELAY, (service, baseline) => compare('1. POST /orders (processing on)', 0.75, service, baseline, (round) => createOrders(`b${round + 1}`)))
  },

  async 'post-streams' () {
    // Two sets of 1,000 streams: all following orders that never change (their cost must not depend
    // on how many there are), and half of them instead following every order (each of those gets all
    // three events of every order created: the cost of fanning out).
    const ofOthers = Array.from({ length: 1000 }, (_, i) => `/orders/stream?order_id=absent-${i}`)
    const sets = {
      '1,000 streams of other orders': ofOthers,
      '500 streams of every order, 500 of other orders': ofOthers.map((path, i) => i % 2 ? path : '/orders/stream')
    }
    const name = '10. POST /orders with event streams open'
    const service = await ServerProcess.start({ DATABASE_URL: tempDatabase(), ...ZERO_DELAY }, undefined, SERVER_CPU)
    try {
      await autocannon({ ...createOrders('warm'), url: `${service.url}/orders`, connections: 10, duration: 1 })
      const alone: number[] = []
      const streamed = new Map<string, { rates: number[], lost: number, megabytes: number }>()
      // Rounds alternate between no streams and each set, on the same process.
      for (let round = 0; round < ROUNDS; round++) {
        alone.push(await load(service.url, createOrders(`alone${round}`)))
        for (const [set, paths] of Object.entries(sets)) {
          const streams = await openStreams(service.url, paths)
          const rate = await load(service.url, createOrders(`streamed${round}-${streamed.size}`))
          const figures = streamed.get(set) ?? { rates: [], lost: 0, megabytes: 0 }
          streamed.set(set, { rates: [...figures.rates, rate], lost: figures.lost + paths.length - streams.open, megabytes: figures.megabytes + streams.bytes / 1e6 })
          streams.close()
        }
      }
      rows.push({ scenario: name, figure: 'req/s without streams', value: Math.round(median(alone)), target: '', pass: null })
      for (const [set, { rates, lost, megabytes }] of streamed) {
        rows.push({ scenario: name, figure: `req/s with ${set}`, value: Math.round(median(rates)), target: '', pass: null })
        rows.push({ scenario: name, figure: `ratio with ${set}`, value: Math.round(median(rates) / median(alone) * 100) / 100, target: '', pass: null })
        rows.push({ scenario: name, figure: `MB streamed per round, ${set}`, value: Math.round(megabytes / ROUNDS), target: '', pass: null })
        rows.push({ scenario: name, figure: `streams the service dropped (4 MiB behind), ${set}`, value: lost, target: '', pass: null })
      }
    } finally {
      await service.stop('SIGKILL')
    }
  },

  async get () {
    const stored = QUICK ? 20_000 : 100_000
    await withServers(ZERO_DELAY, async (service, baseline) => {
      await populate(service, stored, 'get')
      await waitFor(async () => (await completedCount(service)) === stored, 'orders to complete', 120_000)
      await compare(`2. GET /orders/:order_id (${stored.toLocaleString('en')} stored)`, 0.85, service, baseline, () => ({
        requests: [{ setupRequest: (req) => ({ ...req, path: `/orders/sim_get_${1 + Math.floor(Math.random() * stored)}` }) }]
      }))
    })
  },

  async metrics () {
    const stored = QUICK ? 200_000 : 1_000_000
    await withServers({ ...ZERO_DELAY, PROCESSOR: 'off' }, async (service, baseline) => {
      await populate(service, stored, 'metrics')
      await compare(`3. GET /orders/metrics (${stored.toLocaleString('en')} stored)`, 0.85, service, baseline, () => ({ path: '/orders/metrics' }))
    })
  },

  async throughput () {
    const total = QUICK ? 50_000 : 200_000
    const service = await ServerProcess.start({ DATABASE_URL: tempDatabase(), ...ZERO_DELAY })
    try {
      const started = performance.now()
      await populate(service, total, 'tp')
      await waitFor(async () => (await completedCount(service)) === total, 'all orders completed', 300_000)
      const seconds = (performance.now() - started) / 1000
      const perSecond = total / seconds
      const rss = memoryMb(service.child.pid!, 'VmHWM')
      const name = `4. populate ${total.toLocaleString('en')}, zero delay, until all Completed`
      rows.push({ scenario: name, figure: 'orders/s end to end', value: Math.round(perSecond), target: '>= 25000', pass: perSecond >= 25_000 })
      rows.push({ scenario: name, figure: 'peak RSS MB', value: rss, target: '<= 250', pass: rss <= 250 })
    } finally {
      await service.stop('SIGKILL')
    }
  },

  async delays () {
    const total = 10_000
    const service = await ServerProcess.start({ DATABASE_URL: tempDatabase(), PROCESSOR_CONCURRENCY: '10000', LOG_LEVEL: 'warn' })
    try {
      const started = performance.now()
      await populate(service, total, 'delays')
      await waitFor(async () => (await completedCount(service)) === total, 'all orders completed', 120_000)
      const seconds = (performance.now() - started) / 1000
      rows.push({
        scenario: '5. 10,000 orders, original delays (2 s + 3-7 s), concurrency 10000',
        figure: 'seconds to drain', value: Math.round(seconds * 10) / 10, target: '<= 15', pass: seconds <= 15
      })
    } finally {
      await service.stop('SIGKILL')
    }
  },

  async 'pg-post' () {
    await withPostgres((url) => withServers({ ...ZERO_DELAY, DATABASE_URL: url }, (service, baseline) =>
      compare('7. PostgreSQL: POST /orders (processing on)', null, service, baseline, (round) => createOrders(`pg${round + 1}`))))
  },

  async 'pg-metrics' () {
    const stored = QUICK ? 200_000 : 1_000_000
    await withPostgres((url) => withServers({ ...ZERO_DELAY, DATABASE_URL: url, PROCESSOR: 'off' }, async (service, baseline) => {
      const seconds = await populate(service, stored, 'metrics')
      rows.push({ scenario: `8. PostgreSQL: populate ${stored.toLocaleString('en')}`, figure: 'seconds to answer', value: Math.round(seconds * 10) / 10, target: '', pass: null })
      await compare(`8. PostgreSQL: GET /orders/metrics (${stored.toLocaleString('en')} stored)`, null, service, baseline, () => ({ path: '/orders/metrics' }))
    }))
  },

  async 'pg-workers' () {
    const total = QUICK ? 20_000 : 50_000
    for (const workers of [1, 2, 4]) {
      await withPostgres(async (url) => {
        const env = { ...ZERO_DELAY, DATABASE_URL: url }
        const api = await ServerProcess.start({ ...env, PROCESSOR: 'off' })
        const started: ServerProcess[] = []
        try {
          started.push(...await Promise.all(Array.from({ length: workers }, () => ServerProcess.startWorker(env))))
          const t0 = performance.now()
          await populate(api, total, 'workers')
          await waitFor(async () => (await completedCount(api)) === total, 'all orders completed', 300_000)
          const perSecond = total / ((performance.now() - t0) / 1000)
          rows.push({
            scenario: `9. PostgreSQL: ${total.toLocaleString('en')} orders, ${workers} worker process${workers > 1 ? 'es' : ''}`,
            figure: 'orders/s, populate to all Completed', value: Math.round(perSecond), target: '', pass: null
          })
        } finally {
          await Promise.all([api, ...started].map((p) => p.stop('SIGKILL')))
        }
      })
    }
  },

  async populate () {
    const total = 1_000_000
    const service = await ServerProcess.start({ DATABASE_URL: tempDatabase(), ...ZERO_DELAY, PROCESSOR: 'off' })
    try {
      const seconds = await populate(service, total, 'million')
      rows.push({
        scenario: '6. one populate call of 1,000,000 orders',
        figure: 'seconds to answer', value: Math.round(seconds * 100) / 100, target: '<= 5', pass: seconds <= 5
      })
      rows.push({ scenario: '6. one populate call of 1,000,000 orders', figure: 'peak RSS MB', value: memoryMb(service.child.pid!, 'VmHWM'), target: '', pass: null })
    } finally {
      await service.stop('SIGKILL')
    }
  }
}

for (const name of SCENARIOS) {
  if (!selected.has(name)) continue
  process.stderr.write(`running ${name}...\n`)
  await scenarios[name]()
}

const table = [
  '| scenario | figure | value | target | met |',
  '| --- | --- | ---: | --- | --- |',
  ...rows.map((r) => `| ${r.scenario} | ${r.figure} | ${r.value} | ${r.target} | ${r.pass === null ? '' : r.pass ? 'yes' : '**no**'} |`)
].join('\n')
console.log(table)
writeFileSync(new URL('results.json', import.meta.url), JSON.stringify({
  date: new Date().toISOString(), quick: QUICK, rounds: ROUNDS, durationSeconds: DURATION_S, connections: CONNECTIONS, rows
}, null, 2))
process.exit(rows.every((r) => r.pass !== false) ? 0 : 1)
