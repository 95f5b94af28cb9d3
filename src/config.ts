import { envSchema } from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'
import type { ErrorObject } from 'ajv'
import { StringEnum } from './string-enum.ts'
import { describeError } from './validation-errors.ts'
import { SCHEDULE_PATTERN, STANDARD_SCHEDULE } from './webhooks/retry-schedule.ts'

/** A comma-separated list of `item`s, possibly empty. */
const listOf = (item: string) => `^ *(${item}( *, *${item})*)? *$`
/** A host name or IP address, IPv6 in brackets, without port. */
const HOST_NAME = String.raw`([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])`

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
  MAX_ATTEMPTS: Type.Integer({ default: 3, minimum: 1, maximum: 100 }),
  RETRY_BACKOFF_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 3_600_000 }),
  LEASE_MS: Type.Integer({ default: 30000, minimum: 100, maximum: 86_400_000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ default: 10000, minimum: 0, maximum: 600_000 }),
  API_KEY: Type.Optional(Type.String({ minLength: 16, description: 'when set, required as Authorization: Bearer <key> on every route but /health, /ready, /docs and the /dashboard page' })),
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
  WEBHOOK_RETRY_SCHEDULE: Type.String({
    default: STANDARD_SCHEDULE,
    pattern: SCHEDULE_PATTERN,
    description: 'the waits after each failed attempt (500ms, 5s, 5m, 2h); when the attempt after the last wait fails, the delivery has failed'
  }),
  POPULATE_ENABLED: Type.Boolean({ default: true }),
  POPULATE_MAX: Type.Integer({ default: 1_000_000, minimum: 1, maximum: 10_000_000 }),
  ACCESS_LOG: Type.Boolean({ default: false, description: 'log every request (one line each); errors and slow requests are logged either way' }),
  SLOW_REQUEST_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 3_600_000, description: 'log a request that took longer than this at warn; 0 turns it off' }),
  LOG_LEVEL: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' })
})

export type Env = Static<typeof EnvSchema>

/**
 * How much longer than the work a lease must last. Between the claim and the outcome's commit come
 * the claim's own commit, the wait in the queue and the settle: 0-130 ms seen on SQLite with 1000
 * orders at once and a populate of 200,000 alongside (20-45 ms without the populate); an event loop
 * held up by a large write adds to it. 500 ms is about four times the worst seen.
 */
export const LEASE_MARGIN_MS = 500

export interface Range { min: number, max: number }

export type Config = Env & { processingTime: Range }

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
  // A claim whose lease ends before its outcome is written would be taken over by another process
  // while still running, and the order processed twice.
  const leaseNeeded = processingTime.max + LEASE_MARGIN_MS
  if (env.LEASE_MS < leaseNeeded) {
    throw new ConfigError(`LEASE_MS (${env.LEASE_MS}) must exceed the longest PROCESSING_TIME_MS (${processingTime.max}) by at least ${LEASE_MARGIN_MS} ms: set it to ${leaseNeeded} or more`)
  }
  return { ...env, processingTime }
}
