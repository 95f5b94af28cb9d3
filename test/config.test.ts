import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.ts'

t.test('defaults reproduce the original service', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    HOST: '127.0.0.1',
    PORT: 3000,
    DATABASE_URL: 'sqlite:data/orders.db',
    PROCESSOR: 'on',
    PROCESSOR_CONCURRENCY: 1000,
    PENDING_DELAY_MS: 2000,
    processingTime: { min: 3000, max: 7000 },
    FAILURE_RATE: 0,
    MAX_ATTEMPTS: 3,
    POPULATE_ENABLED: true,
    POPULATE_MAX: 1_000_000
  })
})

t.test('values are converted from text', async (t) => {
  const config = loadConfig({ PORT: '8080', POPULATE_ENABLED: 'false', FAILURE_RATE: '0.25', PROCESSING_TIME_MS: '250' })
  t.match(config, { PORT: 8080, POPULATE_ENABLED: false, FAILURE_RATE: 0.25, processingTime: { min: 250, max: 250 } })
})

t.test('a lease need not outlast the work, which renews it', async (t) => {
  t.match(loadConfig({ PROCESSING_TIME_MS: '100-10000', LEASE_MS: '1000' }), { LEASE_MS: 1000, processingTime: { max: 10000 } })
  t.match(loadConfig({ DATABASE_URL: 'postgres://db/orders', LEASE_MS: '10000' }), { LEASE_MS: 10000, DATABASE_TIMEOUT_MS: 5000 }, 'twice the PostgreSQL deadline')
  t.match(loadConfig({ DATABASE_URL: 'postgres://db/orders', LEASE_MS: '1000', DATABASE_TIMEOUT_MS: '500' }), { LEASE_MS: 1000 })
})

t.test('a processing module lifts the limit the simulated work puts on ATTEMPT_TIMEOUT_MS', async (t) => {
  t.match(loadConfig({ PROCESSOR_MODULE: 'step.mjs', ATTEMPT_TIMEOUT_MS: '1000' }), { PROCESSOR_MODULE: 'step.mjs', ATTEMPT_TIMEOUT_MS: 1000 })
  t.equal(loadConfig({}).ATTEMPT_TIMEOUT_MS, 300_000)
})

const bad: Array<[Record<string, string>, RegExp]> = [
  [{ PORT: '70000' }, /^PORT must be <= 65535$/],
  [{ PORT: 'http' }, /^PORT must be integer$/],
  [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL must match pattern/],
  [{ PROCESSOR: 'maybe' }, /^PROCESSOR must be one of: on, off$/],
  [{ FAILURE_RATE: '2' }, /^FAILURE_RATE must be <= 1$/],
  [{ PROCESSING_TIME_MS: 'slow' }, /^PROCESSING_TIME_MS must match pattern/],
  [{ PROCESSING_TIME_MS: '7000-3000' }, /^PROCESSING_TIME_MS must be "min-max" with min <= max/],
  // A renewal may take up to DATABASE_TIMEOUT_MS: a lease shorter than twice that could end before it lands.
  [{ DATABASE_URL: 'postgres://db/orders', LEASE_MS: '9999' },
    /^LEASE_MS \(9999\) must be at least 2 x DATABASE_TIMEOUT_MS \(5000\) on PostgreSQL, so that renewals every LEASE_MS \/ 3 land in time: set it to 10000 or more$/],
  [{ DATABASE_URL: 'postgres://db/orders', DATABASE_TIMEOUT_MS: '1000', LEASE_MS: '1500' }, /^LEASE_MS \(1500\) must be at least 2 x DATABASE_TIMEOUT_MS \(1000\)/],
  [{ PROCESSING_TIME_MS: '1000-300000' }, /^ATTEMPT_TIMEOUT_MS \(300000\) must exceed the longest PROCESSING_TIME_MS \(300000\): set it to 300001 or more$/],
  [{ ATTEMPT_TIMEOUT_MS: '0' }, /^ATTEMPT_TIMEOUT_MS must be >= 1$/],
  [{ PROCESSOR_MODULE: '' }, /^PROCESSOR_MODULE must NOT have fewer than 1 characters$/],
  [{ POPULATE_ENABLED: 'perhaps' }, /^POPULATE_ENABLED must be boolean$/],
  [{ MAX_ATTEMPTS: '0' }, /^MAX_ATTEMPTS must be >= 1$/],
  [{ DATABASE_TIMEOUT_MS: '10' }, /^DATABASE_TIMEOUT_MS must be >= 100$/],
  [{ ORDER_RETENTION: '90 days' }, /^ORDER_RETENTION must /],
  [{ FAILED_ORDER_RETENTION: '-1d' }, /^FAILED_ORDER_RETENTION must /],
  [{ WEBHOOK_DELIVERY_RETENTION: '30' }, /^WEBHOOK_DELIVERY_RETENTION must /]
]

t.test('retentions: a duration with a unit, or off; Failed orders follow ORDER_RETENTION unless set', async (t) => {
  t.same(loadConfig({}).retention, { orders: null, failedOrders: null, deliveries: 30 * 86_400_000 })
  t.same(loadConfig({ ORDER_RETENTION: '90d' }).retention, { orders: 90 * 86_400_000, failedOrders: 90 * 86_400_000, deliveries: 30 * 86_400_000 })
  t.same(loadConfig({ ORDER_RETENTION: '2s', FAILED_ORDER_RETENTION: 'off', WEBHOOK_DELIVERY_RETENTION: '12h' }).retention,
    { orders: 2000, failedOrders: null, deliveries: 12 * 3_600_000 })
})

for (const [env, message] of bad) {
  t.test(`refuses ${JSON.stringify(env)} with one line naming the variable`, async (t) => {
    t.throws(() => loadConfig(env), { constructor: ConfigError, message })
  })
}

t.test('WEBHOOK_ENDPOINT_CONCURRENCY is a quarter of WEBHOOK_CONCURRENCY by default, and at most all of it', async (t) => {
  t.equal(loadConfig({}).WEBHOOK_ENDPOINT_CONCURRENCY, 13)
  t.equal(loadConfig({ WEBHOOK_CONCURRENCY: '2' }).WEBHOOK_ENDPOINT_CONCURRENCY, 1)
  t.equal(loadConfig({ WEBHOOK_CONCURRENCY: '10', WEBHOOK_ENDPOINT_CONCURRENCY: '10' }).WEBHOOK_ENDPOINT_CONCURRENCY, 10)
  t.throws(() => loadConfig({ WEBHOOK_CONCURRENCY: '10', WEBHOOK_ENDPOINT_CONCURRENCY: '11' }), new ConfigError('WEBHOOK_ENDPOINT_CONCURRENCY (11) must be at most WEBHOOK_CONCURRENCY (10)'))
  t.throws(() => loadConfig({ WEBHOOK_ENDPOINT_CONCURRENCY: '0' }), { message: 'WEBHOOK_ENDPOINT_CONCURRENCY must be >= 1' })
})

t.test('WEBHOOK_CIRCUIT_FAILURES is 5 by default; 0 is refused with one line', async (t) => {
  t.equal(loadConfig({}).WEBHOOK_CIRCUIT_FAILURES, 5)
  t.equal(loadConfig({ WEBHOOK_CIRCUIT_FAILURES: '1' }).WEBHOOK_CIRCUIT_FAILURES, 1)
  t.throws(() => loadConfig({ WEBHOOK_CIRCUIT_FAILURES: '0' }), { message: 'WEBHOOK_CIRCUIT_FAILURES must be >= 1' })
})
