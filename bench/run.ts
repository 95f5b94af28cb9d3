import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { ServerProcess } from '../test/support/server-process.ts'
import { waitFor } from '../test/helper.ts'
import { createDatabase } from '../test/support/pg-database.ts'
import { cpuMs, memoryMb, tempDatabase } from './process-facts.ts'
import type { BaselineAnswers } from './baseline-answers.ts'
import { compareAnswerSizes, startBaseline, type Probe } from './fair-baseline.ts'
import { redisUnreachable, runBullmq, runGraphileWorker } from './peer-process.ts'
import { openStreams } from './event-streams.ts'
import { profilingArgs, topFrames } from './cpu-profile.ts'
import { perThousand, PgWorkMeter, type PgWork } from './pg-work.ts'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    // Orders (and jobs) of scenario 11: fewer for a bounded run while steering by its per-1,000 figures.
    jobs: { type: 'string' },
    rounds: { type: 'string' },
    profile: { type: 'boolean', default: false },
    tracing: { type: 'boolean', default: false }
  }
})

/** PostgreSQL scenarios (and graphile-worker) make a database of their own on this server. */
const POSTGRES_SERVER = process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : 'postgres://postgres@127.0.0.1:5432/postgres'
/** BullMQ runs on a queue of its own on this Redis server; without one its scenario is skipped. */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

const QUICK = args.quick
const ROUNDS = Number(args.rounds ?? (QUICK ? 1 : 3))
const DURATION_S = QUICK ? 3 : 8
const CONNECTIONS = 100
const SCENARIOS = [
  'post', 'get', 'metrics', 'throughput', 'delays', 'populate', 'pg-post', 'pg-metrics', 'pg-workers', 'bullmq', 'pg-graphile-worker', 'post-streams',
  'webhooks',
  'module'
] as const
type Scenario = typeof SCENARIOS[number]
const selected = new Set((args.only?.split(',') ?? SCENARIOS) as Scenario[])
for (const name of selected) if (!SCENARIOS.includes(name)) throw new Error(`unknown scenario ${name}; pick from ${SCENARIOS.join(', ')}`)

const ZERO_DELAY = { PENDING_DELAY_MS: '0', PROCESSING_TIME_MS: '0', LOG_LEVEL: 'warn' }
/** A PROCESSOR_MODULE that returns at once (with a small result). */
const RETURN_AT_ONCE = fileURLToPath(new URL('return-at-once.mjs', import.meta.url))
/** Compared servers and queues run on this core; `npm run bench` puts the load generator on core 0. */
const SERVER_CPU = 1

/** A figure, or (value null) why there is none: a skipped peer, a failed scenario. */
interface Row { scenario: string, figure: string, value: number | null, target: string, pass: boolean | null, note?: string }
const rows: Row[] = []

/**
 * With --profile every service process writes a CPU profile into bench/profiles/<scenario>/ and
 * is stopped by SIGTERM (a killed process writes none); the profiler slows it, so the figures of
 * such a run are for reading the profiles beside, not for comparing.
 */
const PROFILE = args.profile
const profiles: Record<string, ReturnType<typeof topFrames>> = {}
let running: Scenario = SCENARIOS[0]
const profileDir = () => fileURLToPath(new URL(`profiles/${running}`, import.meta.url))
/** Node's arguments of a service process: the profiler's when profiling. */
const serviceArgs = () => PROFILE ? profilingArgs(profileDir()) : []
// The service runs as `npm start` runs it: the compiled build, built afresh, without tsx (whose
// loader thread and compiler took ~45 MB of a process's RSS), so profiles name its lines too.
const [SERVER, WORKER] = ['dist/src/server.js', 'dist/src/worker.js']
execFileSync('npm', ['run', 'build'], { stdio: 'inherit' })
const STOP_SERVICE = PROFILE ? 'SIGTERM' : 'SIGKILL'

/**
 * With --tracing every service process records traces (OTEL_* through the environment it
 * inherits) and exports them with OTLP/HTTP protobuf to a sink here that reads and drops them:
 * the figures then include the cost of tracing every request and attempt (sampled always).
 * Without, the OTEL_* variables of the bench's own environment pass through as they are.
 */
if (args.tracing) {
  const sink = createServer((request, response) => {
    request.resume()
    request.on('end', () => response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end())
  }).listen(0, '127.0.0.1')
  await once(sink, 'listening')
  sink.unref()
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(sink.address() as { port: number }).port}`
  process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'http/protobuf'
  process.env.OTEL_TRACES_SAMPLER ??= 'parentbased_always_on'
}

/** A fresh PostgreSQL database for one scenario, dropped afterwards. */
async function withPostgres<T> (run: (url: string) => Promise<T>): Promise<T> {
  const database = await createDatabase(POSTGRES_SERVER)
  try {
    return await run(database.url)
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

async function load (url: string, options: Load): Promise<number> {
  return (await loadRound(url, options)).requests.average
}

async function loadRound (url: string, { path = '', ...options }: Load): Promise<autocannon.Result> {
  const result = await autocannon({ url: `${url}${path}`, connections: CONNECTIONS, duration: DURATION_S, ...options })
  const bad = result.errors + result.timeouts + result.non2xx
  if (bad > 0) throw new Error(`${bad} failed requests against ${url}${path}`)
  return result
}

/** What a comparison with the baseline sends, and what the baseline answers. */
interface Comparison {
  /** Reads from the service the answers the baseline will send. */
  answers: (service: ServerProcess) => Promise<BaselineAnswers>
  /** Requests whose answers must have the same size on both servers. */
  probes: Probe[]
  /** The load of one round; round -1 is the warm-up. */
  load: (round: number) => Load
}

/** A short warm-up lets a server JIT-compile its hot paths before anything is counted. */
async function warmUp (server: ServerProcess, { path = '', ...options }: Load): Promise<void> {
  await autocannon({ ...options, url: `${server.url}${path}`, connections: 10, duration: 1 })
}

/**
 * Starts the baseline with the service's own answers (read after the service's warm-up, so that
 * its metrics list the measured route too), checks that both answer the same size, then
 * alternates baseline and service rounds so both see the same machine, and records the medians.
 */
async function compare (name: string, target: number | null, service: ServerProcess, { answers, probes, load: options }: Comparison): Promise<void> {
  await warmUp(service, options(-1))
  const baseline = await startBaseline(await answers(service), SERVER_CPU)
  try {
    await warmUp(baseline, options(-1))
    const bytes = await compareAnswerSizes(service, baseline, probes)
    const ours: number[] = []
    const theirs: number[] = []
    // The service's CPU time per request hardly moves with what else the machine does, unlike req/s.
    const cpuPerThousand: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      theirs.push(await load(baseline.url, options(round)))
      const cpuBefore = cpuMs(service.child.pid!)
      const result = await loadRound(service.url, options(round))
      cpuPerThousand.push((cpuMs(service.child.pid!) - cpuBefore) / (result.requests.total / 1000))
      ours.push(result.requests.average)
    }
    const ratio = median(ours) / median(theirs)
    rows.push({ scenario: name, figure: 'service req/s', value: Math.round(median(ours)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'baseline req/s', value: Math.round(median(theirs)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'service CPU ms per 1,000 requests', value: Math.round(median(cpuPerThousand)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'service answer bytes', value: Math.round(bytes.service), target: '', pass: null })
    rows.push({ scenario: name, figure: 'baseline answer bytes', value: Math.round(bytes.baseline), target: '', pass: null })
    rows.push({
      scenario: name,
      figure: 'ratio',
      value: Math.round(ratio * 100) / 100,
      target: target === null ? '' : `>= ${target}`,
      pass: target === null ? null : ratio >= target
    })
  } finally {
    await baseline.stop('SIGKILL')
  }
}

/** A POST /orders comparison: every request creates a new order. */
function creates (prefix: string): Comparison {
  return {
    answers: async () => ({}),
    probes: [{ path: '/orders', body: { user_id: 7, order_id: `${prefix}-size-check`, item_ids: [1, 2, 3], total_amount: 59.99 } }],
    load: (round) => ({
      method: 'POST',
      path: '/orders',
      headers: { 'content-type': 'application/json' },
      // [<id>] is replaced by a unique id per request.
      body: JSON.stringify({ user_id: 7, order_id: `${prefix}${round + 1}-[<id>]`, item_ids: [1, 2, 3], total_amount: 59.99 }),
      idReplacement: true
    })
  }
}

/** A GET /orders/metrics comparison: the baseline sends the service's metrics answer. */
const metricsReads: Comparison = {
  answers: async (service) => ({ metrics: (await service.request('/orders/metrics')).json }),
  probes: [{ path: '/orders/metrics' }],
  load: () => ({ path: '/orders/metrics' })
}

/** How many stored orders the baseline sends in turn: enough for their item counts, amounts and durations to vary as the service's do. */
const SAMPLED_ORDERS = 500
/** Requests of the size check: a mean over random orders. */
const SIZE_PROBES = 200

/** A GET /orders/:order_id comparison over `stored` orders sim_get_1.., requested at random. */
function storedReads (stored: number): Comparison {
  const randomPath = () => `/orders/sim_get_${1 + Math.floor(Math.random() * stored)}`
  return {
    answers: async (service) => {
      const orders = []
      for (let i = 0; i < SAMPLED_ORDERS; i++) orders.push((await service.request(randomPath())).json)
      return { orders }
    },
    probes: Array.from({ length: SIZE_PROBES }, () => ({ path: randomPath() })),
    load: () => ({ requests: [{ setupRequest: (req) => ({ ...req, path: randomPath() }) }] })
  }
}

/** Alternates the peer's and the service's end-to-end runs of the same number of jobs, and records the medians. */
async function versusPeer (
  name: string, peer: string, target: number, runService: () => Promise<number>, runPeer: () => Promise<number>
): Promise<void> {
  const ours: number[] = []
  const theirs: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    theirs.push(await runPeer())
    ours.push(await runService())
  }
  const ratio = median(ours) / median(theirs)
  rows.push({ scenario: name, figure: 'service orders/s', value: Math.round(median(ours)), target: '', pass: null })
  rows.push({ scenario: name, figure: `${peer} jobs/s`, value: Math.round(median(theirs)), target: '', pass: null })
  rows.push({ scenario: name, figure: `ratio to ${peer}`, value: Math.round(ratio * 100) / 100, target: `>= ${target}`, pass: ratio >= target })
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

/**
 * The service in a process of its own, pinned to `cpu` (null: on the driver's core), on a SQLite
 * file of its own unless `env` names a database; stopped, and the file removed, afterwards.
 */
async function withService<T> (env: Record<string, string>, run: (service: ServerProcess) => Promise<T>, cpu: number | null = SERVER_CPU): Promise<T> {
  const database = tempDatabase()
  try {
    const service = await ServerProcess.start({ DATABASE_URL: database.url, ...env }, SERVER, cpu ?? undefined, serviceArgs())
    try {
      return await run(service)
    } finally {
      await service.stop(STOP_SERVICE)
    }
  } finally {
    database.remove()
  }
}

/**
 * One service process on SERVER_CPU, from the populate call that creates `total` orders until
 * all of them are Completed (the harness polls /orders/metrics from the other core).
 */
async function endToEnd (env: Record<string, string>, total: number): Promise<{ perSecond: number, peakRssMb: number, cpuMsPerThousand: number }> {
  return await withService(env, async (service) => {
    const started = performance.now()
    const cpuBefore = cpuMs(service.child.pid!)
    await populate(service, total, 'e2e')
    await waitFor(async () => (await completedCount(service)) === total, 'all orders completed', 300_000)
    return {
      perSecond: total / ((performance.now() - started) / 1000),
      peakRssMb: memoryMb(service.child.pid!, 'VmHWM'),
      cpuMsPerThousand: (cpuMs(service.child.pid!) - cpuBefore) / (total / 1000)
    }
  })
}

/** A webhook receiver in the harness's process, on the driver's core: answers 204 at once and counts what it got. */
async function startReceiver (): Promise<{ url: string, received: () => number, close: () => Promise<void> }> {
  let received = 0
  const server = createServer((request, response) => {
    request.resume().on('end', () => { received++; response.writeHead(204).end() })
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`,
    received: () => received,
    close: async () => { server.closeAllConnections(); server.close(); await once(server, 'close') }
  }
}

/**
 * endToEnd with one webhook endpoint subscribed to Completed at the harness's receiver: orders/s
 * until all are Completed, and deliveries/s from the populate call until the receiver has them all.
 */
async function endToEndWithWebhook (total: number): Promise<{ perSecond: number, deliveriesPerSecond: number }> {
  const receiver = await startReceiver()
  try {
    return await withService({ ...ZERO_DELAY, WEBHOOK_ALLOW_PRIVATE: 'true' }, async (service) => {
      const registered = await service.request('/webhooks', { url: receiver.url, events: ['Completed'] })
      if (registered.status !== 201) throw new Error(`could not register the receiver: ${JSON.stringify(registered.json)}`)
      const started = performance.now()
      await populate(service, total, 'e2e')
      await waitFor(async () => (await completedCount(service)) === total, 'all orders completed', 300_000)
      const perSecond = total / ((performance.now() - started) / 1000)
      await waitFor(() => receiver.received() >= total, 'every webhook delivered', 300_000)
      return { perSecond, deliveriesPerSecond: total / ((performance.now() - started) / 1000) }
    })
  } finally {
    await receiver.close()
  }
}

const scenarios: Record<Scenario, () => Promise<void>> = {
  async post () {
    await withService(ZERO_DELAY, (service) => compare('1. POST /orders (processing on)', 0.75, service, creates('b')))
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
    const name = '12. POST /orders with event streams open'
    await withService(ZERO_DELAY, async (service) => {
      await autocannon({ ...creates('warm').load(0), url: `${service.url}/orders`, connections: 10, duration: 1 })
      const alone: number[] = []
      const streamed = new Map<string, { rates: number[], lost: number, megabytes: number }>()
      // Rounds alternate between no streams and each set, on the same process.
      for (let round = 0; round < ROUNDS; round++) {
        alone.push(await load(service.url, creates(`alone${round}-`).load(0)))
        for (const [set, paths] of Object.entries(sets)) {
          const streams = await openStreams(service.url, paths)
          const rate = await load(service.url, creates(`streamed${round}-${streamed.size}-`).load(0))
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
    })
  },

  async get () {
    const stored = QUICK ? 20_000 : 100_000
    await withService(ZERO_DELAY, async (service) => {
      await populate(service, stored, 'get')
      await waitFor(async () => (await completedCount(service)) === stored, 'orders to complete', 120_000)
      await compare(`2. GET /orders/:order_id (${stored.toLocaleString('en')} stored)`, 0.85, service, storedReads(stored))
    })
  },

  async metrics () {
    const stored = QUICK ? 200_000 : 1_000_000
    await withService({ ...ZERO_DELAY, PROCESSOR: 'off' }, async (service) => {
      await populate(service, stored, 'metrics')
      await compare(`3. GET /orders/metrics (${stored.toLocaleString('en')} stored)`, 0.85, service, metricsReads)
    })
  },

  async throughput () {
    const total = QUICK ? 50_000 : 200_000
    const { perSecond, peakRssMb, cpuMsPerThousand } = await endToEnd(ZERO_DELAY, total)
    const name = `4. populate ${total.toLocaleString('en')}, zero delay, until all Completed`
    rows.push({ scenario: name, figure: 'orders/s end to end', value: Math.round(perSecond), target: '>= 25000', pass: perSecond >= 25_000 })
    rows.push({ scenario: name, figure: 'service CPU ms per 1,000 orders', value: Math.round(cpuMsPerThousand * 10) / 10, target: '', pass: null })
    rows.push({ scenario: name, figure: 'peak RSS MB', value: peakRssMb, target: '<= 250', pass: peakRssMb <= 250 })
  },

  async delays () {
    const total = 10_000
    await withService({ PROCESSOR_CONCURRENCY: '10000', LOG_LEVEL: 'warn' }, async (service) => {
      const started = performance.now()
      await populate(service, total, 'delays')
      await waitFor(async () => (await completedCount(service)) === total, 'all orders completed', 120_000)
      const seconds = (performance.now() - started) / 1000
      rows.push({
        scenario: '5. 10,000 orders, original delays (2 s + 3-7 s), concurrency 10000',
        figure: 'seconds to drain',
        value: Math.round(seconds * 10) / 10,
        target: '<= 15',
        pass: seconds <= 15
      })
    }, null)
  },

  async 'pg-post' () {
    await withPostgres((url) => withService({ ...ZERO_DELAY, DATABASE_URL: url }, (service) =>
      compare('7. PostgreSQL: POST /orders, one process (processing on)', 0.5, service, creates('pg'))))
  },

  async 'pg-metrics' () {
    const stored = QUICK ? 200_000 : 1_000_000
    await withPostgres((url) => withService({ ...ZERO_DELAY, DATABASE_URL: url, PROCESSOR: 'off' }, async (service) => {
      const seconds = await populate(service, stored, 'metrics')
      rows.push({ scenario: `8. PostgreSQL: populate ${stored.toLocaleString('en')}`, figure: 'seconds to answer', value: Math.round(seconds * 10) / 10, target: '', pass: null })
      await compare(`8. PostgreSQL: GET /orders/metrics (${stored.toLocaleString('en')} stored)`, 0.85, service, metricsReads)
    }))
  },

  async 'pg-workers' () {
    const total = QUICK ? 20_000 : 50_000
    for (const workers of [1, 2, 4]) {
      await withPostgres(async (url) => {
        const env = { ...ZERO_DELAY, DATABASE_URL: url }
        const api = await ServerProcess.start({ ...env, PROCESSOR: 'off' }, SERVER, undefined, serviceArgs())
        const started: ServerProcess[] = []
        try {
          started.push(...await Promise.all(Array.from({ length: workers }, () => ServerProcess.startWorker(env, { entry: WORKER, nodeArgs: serviceArgs() }))))
          const t0 = performance.now()
          await populate(api, total, 'workers')
          await waitFor(async () => (await completedCount(api)) === total, 'all orders completed', 300_000)
          const perSecond = total / ((performance.now() - t0) / 1000)
          rows.push({
            scenario: `9. PostgreSQL: ${total.toLocaleString('en')} orders, ${workers} worker process${workers > 1 ? 'es' : ''}`,
            figure: 'orders/s, populate to all Completed',
            value: Math.round(perSecond),
            target: '',
            pass: null
          })
        } finally {
          await Promise.all([api, ...started].map((p) => p.stop(STOP_SERVICE)))
        }
      })
    }
  },

  async populate () {
    const total = 1_000_000
    await withService({ ...ZERO_DELAY, PROCESSOR: 'off' }, async (service) => {
      const seconds = await populate(service, total, 'million')
      rows.push({
        scenario: '6. one populate call of 1,000,000 orders',
        figure: 'seconds to answer',
        value: Math.round(seconds * 100) / 100,
        target: '<= 5',
        pass: seconds <= 5
      })
      rows.push({ scenario: '6. one populate call of 1,000,000 orders', figure: 'peak RSS MB', value: memoryMb(service.child.pid!, 'VmHWM'), target: '', pass: null })
    }, null)
  },

  async bullmq () {
    const jobs = QUICK ? 50_000 : 100_000
    const name = `10. end to end, zero delay, ${jobs.toLocaleString('en')} orders / no-op jobs each: embedded service vs BullMQ`
    const unreachable = await redisUnreachable(REDIS_URL)
    if (unreachable) {
      process.stderr.write(`bullmq skipped: Redis at ${REDIS_URL} is unreachable (${unreachable})\n`)
      rows.push({ scenario: name, figure: 'skipped', value: null, target: '', pass: null, note: `Redis at ${REDIS_URL} unreachable: ${unreachable}` })
      return
    }
    await versusPeer(name, 'BullMQ', 3,
      async () => (await endToEnd(ZERO_DELAY, jobs)).perSecond,
      () => runBullmq(REDIS_URL, jobs, SERVER_CPU))
  },

  async webhooks () {
    const total = QUICK ? 20_000 : 100_000
    const name = `13. populate ${total.toLocaleString('en')}, zero delay, until all Completed: one webhook endpoint subscribed to Completed`
    const without: number[] = []
    const withWebhook: number[] = []
    const deliveries: number[] = []
    // Rounds alternate, so both runs see the same machine.
    for (let round = 0; round < ROUNDS; round++) {
      without.push((await endToEnd(ZERO_DELAY, total)).perSecond)
      const run = await endToEndWithWebhook(total)
      withWebhook.push(run.perSecond)
      deliveries.push(run.deliveriesPerSecond)
    }
    rows.push({ scenario: name, figure: 'orders/s without webhooks', value: Math.round(median(without)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'orders/s with the endpoint', value: Math.round(median(withWebhook)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'ratio with / without', value: Math.round(median(withWebhook) / median(without) * 100) / 100, target: '', pass: null })
    rows.push({ scenario: name, figure: 'deliveries/s, populate to the last delivered', value: Math.round(median(deliveries)), target: '', pass: null })
  },

  async module () {
    const total = QUICK ? 50_000 : 200_000
    const name = `14. populate ${total.toLocaleString('en')}, zero delay, until all Completed: a PROCESSOR_MODULE that returns at once vs the simulated work`
    const simulated: number[] = []
    const viaModule: number[] = []
    // Rounds alternate, so that both see the same machine.
    for (let round = 0; round < ROUNDS; round++) {
      simulated.push((await endToEnd(ZERO_DELAY, total)).perSecond)
      viaModule.push((await endToEnd({ ...ZERO_DELAY, PROCESSOR_MODULE: RETURN_AT_ONCE }, total)).perSecond)
    }
    const ratio = median(viaModule) / median(simulated)
    rows.push({ scenario: name, figure: 'orders/s, simulated work', value: Math.round(median(simulated)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'orders/s, module', value: Math.round(median(viaModule)), target: '', pass: null })
    rows.push({ scenario: name, figure: 'ratio module / simulated', value: Math.round(ratio * 100) / 100, target: '>= 0.9', pass: ratio >= 0.9 })
  },

  async 'pg-graphile-worker' () {
    const jobs = Number(args.jobs ?? (QUICK ? 50_000 : 100_000))
    const name = `11. PostgreSQL end to end, one process, ${jobs.toLocaleString('en')} orders / no-op jobs each: service vs graphile-worker`
    const work: Record<'service' | 'graphile-worker', PgWork[]> = { service: [], 'graphile-worker': [] }
    await versusPeer(name, 'graphile-worker', 1.25,
      () => withPostgres(async (url) => {
        const { perSecond, work: ours } = await pgEndToEnd(url, jobs)
        work.service.push(perThousand(ours, jobs))
        return perSecond
      }),
      () => withPostgres(async (url) => {
        let meter: PgWorkMeter | undefined
        const perSecond = await runGraphileWorker(url, jobs, SERVER_CPU, {
          ready: async (pid) => { meter = await PgWorkMeter.start(POSTGRES_SERVER, url, pid) },
          done: async () => { await meter!.stop() }
        })
        work['graphile-worker'].push(perThousand(await meter!.finish(), jobs))
        return perSecond
      }))
    workTables.push({ name, work })
  }
}

const POLL_MS = 50
const MAX_POLLS = 300_000 / POLL_MS

/** The per-1,000 figures of scenario 11's rounds, printed after the main table. */
const workTables: Array<{ name: string, work: Record<string, PgWork[]> }> = []

/**
 * endToEnd on PostgreSQL, with what the database and the processes did from the populate call
 * until all orders were Completed (PgWorkMeter): counted after the service is stopped, when its
 * backends have ended and reported their statistics.
 */
async function pgEndToEnd (url: string, total: number): Promise<{ perSecond: number, work: PgWork }> {
  const service = await ServerProcess.start({ ...ZERO_DELAY, DATABASE_URL: url }, SERVER, SERVER_CPU, serviceArgs())
  let perSecond: number
  let meter: PgWorkMeter
  try {
    meter = await PgWorkMeter.start(POSTGRES_SERVER, url, service.child.pid!)
    const started = performance.now()
    await populate(service, total, 'e2e')
    // Each poll of the metrics is a transaction of the service's: every 10 ms (waitFor's pace) they
    // were about half of its transactions per 1,000 orders, and graphile-worker's run is not polled.
    // Every 50 ms, and taken out of the count: at most 50 ms late of the 5-10 s such a run takes.
    let polls = 0
    while (polls++ < MAX_POLLS && await completedCount(service) < total) await sleep(POLL_MS)
    if (polls > MAX_POLLS) throw new Error(`not all ${total} orders completed within ${MAX_POLLS * POLL_MS} ms`)
    perSecond = total / ((performance.now() - started) / 1000)
    await meter.stop()
    meter.harnessTransactions = polls
  } finally {
    await service.stop(STOP_SERVICE)
  }
  return { perSecond, work: await meter.finish() }
}

for (const name of SCENARIOS) {
  if (!selected.has(name)) continue
  process.stderr.write(`running ${name}...\n`)
  running = name
  try {
    await scenarios[name]()
    if (PROFILE) profiles[name] = topFrames(profileDir(), 12)
  } catch (err) {
    // One failed scenario is reported as such; the others still run.
    process.stderr.write(`${name} FAILED: ${(err as Error).stack}\n`)
    rows.push({ scenario: name, figure: 'failed', value: null, target: '', pass: false, note: (err as Error).message })
  }
}

const table = [
  '| scenario | figure | value | target | met |',
  '| --- | --- | ---: | --- | --- |',
  ...rows.map((r) => `| ${r.scenario} | ${r.figure} | ${r.value ?? r.note} | ${r.target} | ${r.pass === null ? '' : r.pass ? 'yes' : '**no**'} |`)
].join('\n')
console.log(table)
/** Each figure's median over the rounds, per system, side by side. */
for (const { name, work } of workTables) {
  const systems = Object.keys(work)
  const figure = (label: string, pick: (w: PgWork) => number, digits = 0) =>
    `| ${label} | ${systems.map((system) => median(work[system]!.map(pick)).toFixed(digits)).join(' | ')} |`
  console.log([
    `\n${name}: per 1,000 orders / jobs (median of the rounds)\n`,
    `| per 1,000 | ${systems.join(' | ')} |`,
    `| --- |${systems.map(() => ' ---: |').join('')}`,
    figure('WAL kB (the database\'s records)', (w) => w.walBytes / 1000),
    figure('of which full-page images', (w) => w.fpiBytes / 1000),
    figure('transactions', (w) => w.transactions, 1),
    figure('rows inserted', (w) => w.inserted),
    figure('rows updated', (w) => w.updated),
    figure('of which HOT', (w) => w.hotUpdated),
    figure('rows deleted', (w) => w.deleted),
    figure('CPU ms, Node process', (w) => w.nodeCpuMs, 1),
    figure('CPU ms, PostgreSQL backends', (w) => w.backendCpuMs, 1),
    figure('CPU ms, both', (w) => w.nodeCpuMs + w.backendCpuMs, 1),
    figure('wall ms', (w) => w.wallMs, 1)
  ].join('\n'))
}
for (const [name, { frames, areas }] of Object.entries(profiles)) {
  console.log(`\n${name}: self time, % of the service processes' busy time\n\n| area | self % | frame | self % |\n| --- | ---: | --- | ---: |`)
  for (let i = 0; i < frames.length; i++) {
    console.log(`| ${areas[i]?.frame ?? ''} | ${areas[i]?.selfPercent ?? ''} | \`${frames[i]!.frame}\` | ${frames[i]!.selfPercent} |`)
  }
}
writeFileSync(new URL('results.json', import.meta.url), JSON.stringify({
  date: new Date().toISOString(), quick: QUICK, rounds: ROUNDS, durationSeconds: DURATION_S, connections: CONNECTIONS, rows, profiles, perThousand: workTables
}, null, 2))
process.exit(rows.every((r) => r.pass !== false) ? 0 : 1)
