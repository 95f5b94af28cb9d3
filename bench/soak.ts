import { writeFileSync } from 'node:fs'
import autocannon from 'autocannon'
import { ServerProcess } from '../test/support/server-process.ts'
import { memoryMb, tempDatabase } from './process-facts.ts'

// Mixed load for SOAK_SECONDS (default ten minutes): creates, reads, lists, metrics, and a populate
// of 1,000 every 10 s, with the original's processing delays shortened so orders keep flowing.
const SECONDS = Number(process.env.SOAK_SECONDS ?? 600)
const CONNECTIONS = 20
const SAMPLE_MS = 5000

const database = tempDatabase()
const server = await ServerProcess.start({
  DATABASE_URL: database.url,
  PENDING_DELAY_MS: '200',
  PROCESSING_TIME_MS: '100-500',
  LOG_LEVEL: 'warn'
})
const pid = server.child.pid as number
const samples: Array<{ second: number, rssMb: number }> = []
const started = Date.now()
const sampler = setInterval(() => samples.push({ second: Math.round((Date.now() - started) / 1000), rssMb: memoryMb(pid, 'VmRSS') }), SAMPLE_MS)

let populateErrors = 0
let batch = 0
const populating = setInterval(() => {
  server.request('/orders/populate', { total_entries: 1000, batch_id: `soak${++batch}` })
    .then((res) => { if (res.status !== 201) populateErrors++ }, () => { populateErrors++ })
}, 10_000)

let n = 0
const result = await autocannon({
  url: server.url,
  connections: CONNECTIONS,
  duration: SECONDS,
  requests: [
    {
      method: 'POST',
      path: '/orders',
      headers: { 'content-type': 'application/json' },
      setupRequest: (req) => ({ ...req, body: JSON.stringify({ user_id: n % 100, order_id: `soak-${++n}`, item_ids: [1, 2], total_amount: 19.99 }) })
    },
    { method: 'GET', setupRequest: (req) => ({ ...req, path: `/orders/soak-${Math.max(1, n - 100)}` }) },
    { method: 'GET', path: '/orders?limit=20&status=Completed' },
    { method: 'GET', path: '/orders/metrics' }
  ]
})
clearInterval(sampler)
clearInterval(populating)
const metrics = (await server.request('/orders/metrics')).json
await server.stop('SIGTERM')
database.remove()

const settled = samples.filter((s) => s.second >= 60)
const report = {
  date: new Date().toISOString(),
  seconds: SECONDS,
  requests: result.requests.total,
  requestsPerSecond: Math.round(result.requests.average),
  errors: result.errors + result.timeouts + result.non2xx + populateErrors,
  orders: metrics.total_orders,
  completed: metrics.completed.count,
  rssMb: { first: samples[0]?.rssMb, afterOneMinute: settled[0]?.rssMb, last: samples.at(-1)?.rssMb, max: Math.max(...samples.map((s) => s.rssMb)) }
}
console.log(JSON.stringify(report, null, 2))
writeFileSync(new URL('soak-results.json', import.meta.url), JSON.stringify({ ...report, samples }, null, 2))
process.exit(report.errors === 0 ? 0 : 1)
