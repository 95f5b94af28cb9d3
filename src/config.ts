import { envSchema } from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'
import type { ErrorObject } from 'ajv'
import { StringEnum } from './string-enum.ts'
import { describeError } from './http/validation-errors.ts'
import { SCHEDULE_PATTERN, STANDARD_SCHEDULE } from './webhooks/retry-schedule.ts'
import { CIRCUIT_FAILURES } from './store/webhook-store.ts'

/** A comma-separated list of `item`s, possibly empty. */
const listOf = (item: string) => `^ *(${item}( *, *${item})*)? *$`
/** A host name or IP address, IPv6 in brackets, without port. */
const HOST_NAME = String.raw`([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])`

/** A retention: a duration with a unit (ms, s, m, h, d) or off. */
const RETENTION_PATTERN = '^ *([0-9]{1,9}(ms|s|m|h|d)|off) *$'
const RETENTION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A retention's milliseconds, null for off; the text matches RETENTION_PATTERN. */
export function parseRetention (text: string): number | null {
  const [, amount, unit] = /([0-9]+)(ms|s|m|h|d)/.exec(text) ?? []
  return amount === undefined ? null : Number(amount) * (RETENTION_UNIT_MS[unit as string] as number)
}

/** How long finished records are kept, in ms (null: for ever). */
export interface Retention { orders: number | null, failedOrders: number | null, deliveries: number | null }

// One schema is the documentation, the validator and the type of the configuration.
export const EnvSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Type.Integer({ default: 3000, minimum: 0, maximum: 65535 }),
  DATABASE_URL: Type.String({
    default: 'sqlite:data/orders.db',
    pattern: '^(sqlite:.+|postgres(ql)?://.+)$',
    description: 'sqlite:<path>, sqlite::memory: or postgres://...'
  }),
  DATABASE_TIMEOUT_MS: Type.Integer({
    default: 5000,
    minimum: 100,
    maximum: 600_000,
    description: 'PostgreSQL: the longest a store call (its queries, a connection attempt, a wait for a pooled connection) may take; then 503'
  }),
  SQLITE_BUSY_TIMEOUT_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 60_000, description: 'how long a SQLite write waits for a lock another program holds' }),
  PROCESSOR: StringEnum(['on', 'off'], { default: 'on', description: 'off: an API-only process' }),
  PROCESSOR_CONCURRENCY: Type.Integer({ default: 1000, minimum: 1, maximum: 100000 }),
  PENDING_DELAY_MS: Type.Integer({ default: 2000, minimum: 0, maximum: 86_400_000 }),
  PROCESSING_TIME_MS: Type.String({
    default: '3000-7000',
    pattern: '^[0-9]{1,8}(-[0-9]{1,8})?$',
    description: 'a fixed time (500) or a range picked uniformly at random (3000-7000)'
  }),
  FAILURE_RATE: Type.Number({ default: 0, minimum: 0, maximum: 1 }),
  PROCESSOR_MODULE: Type.Optional(Type.String({
    minLength: 1,
    description: 'path (from the working directory, or absolute, or a file: URL) to a JavaScript module whose default export processes an order; unset: the simulated work'
  })),
  ATTEMPT_TIMEOUT_MS: Type.Integer({ default: 300_000, minimum: 1, maximum: 86_400_000, description: 'past this an attempt is aborted (its signal) and fails, to be retried' }),
  MAX_ATTEMPTS: Type.Integer({ default: 3, minimum: 1, maximum: 100 }),
  RETRY_BACKOFF_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 3_600_000 }),
  LEASE_MS: Type.Integer({ default: 30000, minimum: 100, maximum: 86_400_000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ default: 10000, minimum: 0, maximum: 600_000 }),
  API_KEY: Type.Optional(Type.String({ minLength: 16, description: 'when set, required as Authorization: Bearer <key> on every route but /health, /ready, /docs and the /dashboard page' })),
  API_KEYS_FILE: Type.Optional(Type.String({
    minLength: 1,
    description: 'a file of named API keys, one "name scope key" a line (scope read or write), read again on SIGHUP and when it changes'
  })),
  MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 60_000, description: 'answer 503 while the event loop lags more than this; 0 turns it off' }),
  REQUEST_TIMEOUT_MS: Type.Integer({ default: 60_000, minimum: 1000, maximum: 3_600_000, description: 'longest time to receive a whole request; then 408' }),
  CONNECTION_TIMEOUT_MS: Type.Integer({ default: 120_000, minimum: 1000, maximum: 3_600_000, description: 'a connection silent this long in both directions is closed, unless a request on it is still being handled' }),
  ALLOWED_ORIGINS: Type.String({
    default: '',
    pattern: listOf(`https?://${HOST_NAME}(:[0-9]{1,5})?`),
    description: 'comma-separated origins (https://shop.example, http://localhost:5173) whose pages may send POST, PUT, PATCH and DELETE requests from a browser'
  }),
  ALLOWED_HOSTS: Type.String({
    default: '',
    pattern: listOf(HOST_NAME),
    description: 'comma-separated host names (orders.internal), any port, served besides localhost, 127.0.0.1 and [::1] when HOST is a loopback address'
  }),
  MAX_STREAMS: Type.Integer({ default: 1000, minimum: 1, maximum: 100_000, description: 'event streams (/orders/stream) open at once; one more is a 503' }),
  WEBHOOK_TIMEOUT_MS: Type.Integer({
    default: 10_000,
    minimum: 100,
    maximum: 300_000,
    description: 'the longest one webhook attempt may take, from resolving the host to the status line; then it has failed'
  }),
  WEBHOOK_ALLOW_PRIVATE: Type.Boolean({
    default: false,
    description: 'true: webhooks may go to loopback, private and link-local addresses (a receiver on this machine or network)'
  }),
  WEBHOOK_CONCURRENCY: Type.Integer({ default: 50, minimum: 1, maximum: 10_000, description: 'webhook attempts under way at once in one process' }),
  WEBHOOK_ENDPOINT_CONCURRENCY: Type.Optional(Type.Integer({
    minimum: 1,
    maximum: 10_000,
    description: 'webhook attempts under way at once for one endpoint in one process, at most WEBHOOK_CONCURRENCY; default a quarter of it'
  })),
  WEBHOOK_CIRCUIT_FAILURES: Type.Integer({
    default: CIRCUIT_FAILURES,
    minimum: 1,
    maximum: 1000,
    description: "failed webhook attempts in a row (timeouts, connection errors, non-2xx) after which an endpoint's circuit opens: its deliveries wait 30 s, then one probe goes (each failed probe doubles the wait, up to 10 min)"
  }),
  WEBHOOK_RETRY_SCHEDULE: Type.String({
    default: STANDARD_SCHEDULE,
    pattern: SCHEDULE_PATTERN,
    description: 'the waits after each failed attempt (500ms, 5s, 5m, 2h); when the attempt after the last wait fails, the delivery has failed'
  }),
  ORDER_RETENTION: Type.String({
    default: 'off',
    pattern: RETENTION_PATTERN,
    description: 'Completed and Cancelled orders finished longer ago than this (2s, 12h, 90d) are deleted; off keeps them'
  }),
  FAILED_ORDER_RETENTION: Type.Optional(Type.String({
    pattern: RETENTION_PATTERN,
    description: 'the same for Failed orders; unset: ORDER_RETENTION'
  })),
  WEBHOOK_DELIVERY_RETENTION: Type.String({
    default: '30d',
    pattern: RETENTION_PATTERN,
    description: 'delivered and failed webhook deliveries older than this are deleted (pending ones never); off keeps them'
  }),
  POPULATE_ENABLED: Type.Boolean({ default: true }),
  POPULATE_MAX: Type.Integer({ default: 1_000_000, minimum: 1, maximum: 10_000_000 }),
  ACCESS_LOG: Type.Boolean({ default: false, description: 'log every request (one line each); errors and slow requests are logged either way' }),
  SLOW_REQUEST_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 3_600_000, description: 'log a request that took longer than this at warn; 0 turns it off' }),
  LOG_LEVEL: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' })
})

export type Env = Static<typeof EnvSchema>

/**
 * How often a processor renews the leases of its running attempts: RENEWALS_PER_LEASE times per
 * LEASE_MS. A renewal is one store call for all of them; each starts on time even while the one
 * before is still under way.
 */
export const RENEWALS_PER_LEASE = 3

/**
 * On PostgreSQL, the shortest lease, as a multiple of DATABASE_TIMEOUT_MS (the longest a store call
 * may take before it fails). A lease renewed at t (by the database's clock, at its transaction's
 * start) must last until the next renewal has landed: that one starts by t + LEASE_MS / 3 and
 * commits by DATABASE_TIMEOUT_MS later. At twice the deadline, LEASE_MS / 6 (a third of the deadline)
 * is left for a late timer or a busy event loop; at the defaults (30,000 and 5,000 ms) a renewal
 * every 10 s lands by 15 s into a 30 s lease, so even two renewals in a row may fail. On SQLite no
 * other process can take over a live process's claims (one process uses the file), so a lease only
 * says how soon a restarted service takes over the orders of one that died.
 */
export const LEASE_DEADLINES = 2

export interface Range { min: number, max: number }

export type Config = Env & { processingTime: Range, WEBHOOK_ENDPOINT_CONCURRENCY: number, retention: Retention }

/**
 * WEBHOOK_ENDPOINT_CONCURRENCY's default, as a share of WEBHOOK_CONCURRENCY: a receiver that never
 * answers holds at most a quarter of the slots, the others keep three quarters (with no cap, one
 * such receiver beside a healthy one cut all deliveries to about 5/s at the defaults).
 */
const ENDPOINT_SHARE = 4

export class ConfigError extends Error {}

export function parseRange (text: string): Range {
  const [min, max = min] = text.split('-').map(Number) as [number, number?]
  return { min, max }
}

/** Reads and checks the configuration; a bad value throws a ConfigError naming the variable. */
export function loadConfig (source: Record<string, string | undefined> = process.env): Config {
  let env: Env
  try {
    env = envSchema<Env>({ schema: EnvSchema, data: source, env: false, dotenv: false })
  } catch (err) {
    const [first] = (err as { errors?: ErrorObject[] }).errors ?? []
    throw new ConfigError(first ? describeError(first, 'env').slice('env/'.length) : (err as Error).message)
  }
  const processingTime = parseRange(env.PROCESSING_TIME_MS)
  if (processingTime.min > processingTime.max) {
    throw new ConfigError(`PROCESSING_TIME_MS must be "min-max" with min <= max, got "${env.PROCESSING_TIME_MS}"`)
  }
  // A live worker's lease must never end before its renewal lands, or another worker takes the order over.
  const leaseNeeded = LEASE_DEADLINES * env.DATABASE_TIMEOUT_MS
  if (env.DATABASE_URL.startsWith('postgres') && env.LEASE_MS < leaseNeeded) {
    throw new ConfigError(`LEASE_MS (${env.LEASE_MS}) must be at least ${LEASE_DEADLINES} x DATABASE_TIMEOUT_MS (${env.DATABASE_TIMEOUT_MS}) on PostgreSQL, so that renewals every LEASE_MS / ${RENEWALS_PER_LEASE} land in time: set it to ${leaseNeeded} or more`)
  }
  // The simulated work must fit in an attempt, or its longest attempts would always time out.
  if (env.PROCESSOR_MODULE === undefined && processingTime.max >= env.ATTEMPT_TIMEOUT_MS) {
    throw new ConfigError(`ATTEMPT_TIMEOUT_MS (${env.ATTEMPT_TIMEOUT_MS}) must exceed the longest PROCESSING_TIME_MS (${processingTime.max}): set it to ${processingTime.max + 1} or more`)
  }
  const endpointConcurrency = env.WEBHOOK_ENDPOINT_CONCURRENCY ?? Math.ceil(env.WEBHOOK_CONCURRENCY / ENDPOINT_SHARE)
  if (endpointConcurrency > env.WEBHOOK_CONCURRENCY) {
    throw new ConfigError(`WEBHOOK_ENDPOINT_CONCURRENCY (${endpointConcurrency}) must be at most WEBHOOK_CONCURRENCY (${env.WEBHOOK_CONCURRENCY})`)
  }
  const orders = parseRetention(env.ORDER_RETENTION)
  const retention = {
    orders,
    failedOrders: env.FAILED_ORDER_RETENTION === undefined ? orders : parseRetention(env.FAILED_ORDER_RETENTION),
    deliveries: parseRetention(env.WEBHOOK_DELIVERY_RETENTION)
  }
  return { ...env, processingTime, WEBHOOK_ENDPOINT_CONCURRENCY: endpointConcurrency, retention }
}

/** The one line a start that failed prints, never a stack trace: a bad setting, or whatever else stopped it. */
export function startFailure (err: unknown): string {
  const [message = ''] = (err instanceof Error ? err.message : String(err)).split('\n')
  return err instanceof ConfigError ? `Invalid configuration: ${message}` : `Could not start: ${message}`
}
