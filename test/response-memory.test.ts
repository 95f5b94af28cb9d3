import http from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import { memoryMb } from '../bench/process-facts.ts'
import { ORDER_STATUSES } from '../src/order.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { anOrder, tempDir, waitForSteady } from './helper.ts'
import { ServerProcess } from './support/server-process.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

// A database of half a million orders and a server process: longer than tap's 30 s for a file.
t.setTimeout(900_000)

/** SPEC's memory goal for the process. */
const MEMORY_GOAL_MB = 250
const SLOW_READERS = 50
const IDS_PER_STATUS = 100_001
const T0 = 1_700_000_000_000

/**
 * The largest answers there are: 1,000 orders with 1,000 item ids of 16 digits each (a page of them
 * would be ~17 MB), and more than 100,000 orders of 64-character ids in every status (listing 100,000
 * of each would be ~34 MB).
 */
async function fillWithTheLargestAnswers (path: string): Promise<void> {
  const store = new SqliteStore(path)
  const itemIds = Array.from({ length: 1000 }, (_, i) => Number.MAX_SAFE_INTEGER - i)
  await store.createMany(Array.from({ length: 1000 }, (_, i) => anOrder(`big-${i}`, { item_ids: itemIds })), T0, T0)
  const longId = (i: number) => `L${String(i).padStart(63, '0')}`
  for (let first = 0; first < 5 * IDS_PER_STATUS; first += 5000) {
    const count = Math.min(5000, 5 * IDS_PER_STATUS - first)
    await store.createMany(Array.from({ length: count }, (_, k) => anOrder(longId(first + k))), T0, T0)
  }
  const claims = await store.claim(3 * IDS_PER_STATUS, T0, 3_600_000)
  await store.settle(claims.slice(0, IDS_PER_STATUS).map((claim) => ({ claim, ok: true as const })), T0 + 1)
  await store.settle(claims.slice(IDS_PER_STATUS, 2 * IDS_PER_STATUS).map((claim) => ({ claim, ok: false as const, error: 'x', retryAt: null })), T0 + 1)
  const pending = (await store.idsByStatus('Pending', IDS_PER_STATUS)).ids
  await Promise.all(pending.map((orderId) => store.cancel(orderId, T0 + 2)))
  const { counts } = await store.stats()
  for (const status of ORDER_STATUSES) if (counts[status] < IDS_PER_STATUS) throw new Error(`only ${counts[status]} ${status} orders`)
  await store.close()
}

interface SlowReader {
  /** Resolves once the first bytes of the answer arrived; the reader then stops reading. */
  started: Promise<void>
  /** Reads the rest; resolves with the whole answer when `keep`, else with its length. */
  finish: () => Promise<string | number>
}

function slowReader (url: string, keep: boolean): SlowReader {
  let response: http.IncomingMessage
  const started = new Promise<void>((resolve, reject) => {
    http.get(url, (res) => {
      response = res
      res.once('data', (first: Buffer) => {
        res.pause()
        chunks.push(first)
        length += first.length
        resolve()
      })
    }).on('error', reject)
  })
  const chunks: Buffer[] = []
  let length = 0
  return {
    started,
    finish: () => new Promise((resolve, reject) => {
      response.on('data', (chunk: Buffer) => {
        length += chunk.length
        if (keep) chunks.push(chunk)
      })
      response.on('end', () => resolve(keep ? Buffer.concat(chunks).toString() : length))
      response.on('error', reject)
      response.resume()
    })
  }
}

t.test(`${SLOW_READERS} slow readers of the largest list page and of the largest metrics keep the server under ${MEMORY_GOAL_MB} MB`, { timeout: 900_000, skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  await fillWithTheLargestAnswers(path)
  const server = await ServerProcess.start({ DATABASE_URL: `sqlite:${path}`, PROCESSOR: 'off' })
  t.teardown(() => server.stop('SIGKILL'))
  const pid = server.child.pid as number
  const idleMb = memoryMb(pid, 'VmRSS')

  const list = `${server.url}/orders?limit=1000`
  const metrics = `${server.url}/orders/metrics?getOrderIds=true&limit=100000`
  const readers = Array.from({ length: SLOW_READERS }, (_, i) => [slowReader(list, i === 0), slowReader(metrics, i === 0)]).flat()
  await Promise.all(readers.map((reader) => reader.started))
  // Every answer has begun and no client reads: the server holds what it holds until they do.
  await waitForSteady(() => memoryMb(pid, 'VmRSS'), 'the server to stop taking memory', { everyMs: 500, within: 1, timeoutMs: 120_000 })
  const heldMb = memoryMb(pid, 'VmHWM')
  const answers = await Promise.all(readers.map((reader) => reader.finish()))
  const peakMb = memoryMb(pid, 'VmHWM')
  t.ok(peakMb <= MEMORY_GOAL_MB, `peak RSS ${peakMb} MB (${idleMb} MB idle, ${heldMb} MB while every reader paused)`)

  const page = JSON.parse(answers[0] as string)
  t.ok(page.orders.length > 0 && page.orders.length < 1000 && (answers[0] as string).length <= 1024 * 1024,
    `the list page was cut at ${page.orders.length} orders, ${(answers[0] as string).length} bytes`)
  t.type(page.next_cursor, 'string', '...with a cursor to the rest')
  const all = JSON.parse(answers[1] as string)
  for (const status of ORDER_STATUSES) {
    const group = all[status.toLowerCase()]
    t.ok(group.order_ids.length === 100_000 && group.truncated, `${status}: 100,000 ids listed, truncated`)
  }
  const metricsLengths = answers.filter((_, i) => i % 2 === 1).slice(1) as number[]
  t.ok(metricsLengths.every((length) => Math.abs(length - (answers[1] as string).length) < 10_000), 'every reader got all of the metrics')
})
