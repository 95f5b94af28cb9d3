import fc from 'fast-check'
import t from 'tap'
import type { InjectOptions } from 'fastify'
import { ORDER_STATUSES } from '../src/order.ts'
import { anOrder, build } from './helper.ts'

// `npm test` runs a fixed seed; `npm run fuzz` runs many more cases from a fresh seed each time.
const RUNS = Number(process.env.FUZZ_RUNS ?? 150)
const SEED = process.env.FUZZ_RUNS ? Date.now() : 20261125
const params = { numRuns: RUNS, seed: SEED }

const field = fc.constantFrom('user_id', 'order_id', 'item_ids', 'total_amount', 'total_entries', 'batch_id', 'orders', 'limit',
  '__proto__', 'constructor', 'prototype', '', 'extra')
const extreme = fc.oneof(
  fc.double(), fc.integer(), fc.bigInt().map(String), fc.constantFrom(-0, 1e308, -1e308, 2 ** 53, 5e-324, 0.005, 1e13 + 0.01),
  fc.string(), fc.string({ unit: 'binary' }), fc.constant(null), fc.boolean(), fc.array(fc.integer(), { maxLength: 5 })
)
/** Orders that are valid but for one field: the most telling inputs. */
const nearlyValid = fc.tuple(field, extreme, fc.boolean()).map(([key, value, drop]) => {
  const order: Record<string, unknown> = { ...anOrder('FZ1') }
  if (drop) delete order[key]
  else order[key] = value
  return order
})
const body = fc.oneof(nearlyValid, fc.array(nearlyValid, { maxLength: 5 }).map((orders) => ({ orders })), fc.jsonValue(), fc.object())
const rawText = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
  fc.integer({ min: 1, max: 5000 }).map((n) => '['.repeat(n)), fc.integer({ min: 1, max: 2000 }).map((n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`))
const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x', 'application/xml', '', 'application/json; charset=latin1')
const postPath = fc.constantFrom('/orders', '/orders/', '/orders/populate', '/orders/FZ1/cancel', '/orders/FZ1/retry', '/orders/batch',
  '/orders/retry-failed', '/processing/pause', '/processing/resume')
const getPath = fc.oneof(
  fc.constantFrom('/orders', '/orders/metrics', '/orders/FZ1', '/health', '/ready', '/processing'),
  fc.string().map((s) => `/orders/${encodeURIComponent(s)}`),
  fc.string().map((s) => `/orders/${s}`),
  fc.tuple(fc.constantFrom('limit', 'cursor', 'status', 'user_id', 'getOrderIds', '__proto__', 'x'), fc.string())
    .map(([k, v]) => `/orders?${k}=${encodeURIComponent(v)}`),
  fc.tuple(fc.constantFrom('limit', 'getOrderIds', 'x'), fc.string()).map(([k, v]) => `/orders/metrics?${k}=${encodeURIComponent(v)}`)
)

t.test(`fuzzing every route (${RUNS} cases a property, seed ${SEED})`, async (t) => {
  const app = await build(t, { PROCESSOR: 'off', POPULATE_MAX: '50' })
  const total = async () => {
    const stats = await app.store.stats()
    return ORDER_STATUSES.reduce((sum, status) => sum + stats.counts[status], 0)
  }
  const check = async (request: InjectOptions) => {
    const before = await total()
    const res = await app.inject(request)
    if (res.statusCode >= 500) throw new Error(`${res.statusCode} for ${JSON.stringify(request).slice(0, 300)}: ${res.body}`)
    if (!/^application\/json/.test(String(res.headers['content-type'])) && res.statusCode !== 302) {
      throw new Error(`not JSON (${res.headers['content-type']}) for ${JSON.stringify(request).slice(0, 300)}`)
    }
    if (res.statusCode >= 400) {
      if (typeof res.json().error !== 'string') throw new Error(`no error message: ${res.body}`)
      if (await total() !== before) throw new Error(`a refused request created orders: ${JSON.stringify(request).slice(0, 300)}`)
    }
  }

  await fc.assert(fc.asyncProperty(postPath, body, (url, payload) =>
    check({ method: 'POST', url, payload: JSON.stringify(payload), headers: { 'content-type': 'application/json' } })), params)
  await fc.assert(fc.asyncProperty(postPath, rawText, contentType, (url, payload, type) =>
    check({ method: 'POST', url, payload, headers: type ? { 'content-type': type } : {} })), params)
  await fc.assert(fc.asyncProperty(getPath, (url) => check({ method: 'GET', url })), params)
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'the server is alive')
})
