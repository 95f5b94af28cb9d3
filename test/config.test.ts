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

t.test('a lease that exceeds the longest processing time by the margin is accepted', async (t) => {
  t.match(loadConfig({ PROCESSING_TIME_MS: '100-1000', LEASE_MS: '1500' }), { LEASE_MS: 1500, processingTime: { max: 1000 } })
})

const bad: Array<[Record<string, string>, RegExp]> = [
  [{ PORT: '70000' }, /^PORT must be <= 65535$/],
  [{ PORT: 'http' }, /^PORT must be integer$/],
  [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL must match pattern/],
  [{ PROCESSOR: 'maybe' }, /^PROCESSOR must be one of: on, off$/],
  [{ FAILURE_RATE: '2' }, /^FAILURE_RATE must be <= 1$/],
  [{ PROCESSING_TIME_MS: 'slow' }, /^PROCESSING_TIME_MS must match pattern/],
  [{ PROCESSING_TIME_MS: '7000-3000' }, /^PROCESSING_TIME_MS must be "min-max" with min <= max/],
  [{ LEASE_MS: '5000' }, /^LEASE_MS \(5000\) must exceed the longest PROCESSING_TIME_MS \(7000\) by at least 500 ms: set it to 7500 or more$/],
  // A settle lands up to ~130 ms after the work ends: with no margin, orders were processed twice.
  [{ PROCESSING_TIME_MS: '1000', LEASE_MS: '1001' }, /^LEASE_MS \(1001\) must exceed the longest PROCESSING_TIME_MS \(1000\) by at least 500 ms: set it to 1500 or more$/],
  [{ POPULATE_ENABLED: 'perhaps' }, /^POPULATE_ENABLED must be boolean$/],
  [{ MAX_ATTEMPTS: '0' }, /^MAX_ATTEMPTS must be >= 1$/],
  [{ DATABASE_TIMEOUT_MS: '10' }, /^DATABASE_TIMEOUT_MS must be >= 100$/]
]

for (const [env, message] of bad) {
  t.test(`refuses ${JSON.stringify(env)} with one line naming the variable`, async (t) => {
    t.throws(() => loadConfig(env), { constructor: ConfigError, message })
  })
}
