import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp } from '../src/app.ts'
import { loadConfig, type Config, type Env } from '../src/config.ts'
import { createDatabase, POSTGRES_URL } from './support/pg-database.ts'

export type Settings = Partial<Record<keyof Env, string>>

/**
 * Defaults for tests: an in-memory store, no simulated delays, and no overload guard: on a loaded
 * 2-core machine (CI, or tests running side by side) the event loop lagged past its 1 s default,
 * and tests of anything else got "Service overloaded" 503s. The tests of the guard set it.
 */
export function testConfig (settings: Settings = {}): Config {
  return loadConfig({
    DATABASE_URL: 'sqlite::memory:',
    PENDING_DELAY_MS: '0',
    PROCESSING_TIME_MS: '0',
    LOG_LEVEL: 'silent',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...settings
  })
}

/**
 * Builds the app for one test and closes it when the test ends: on an in-memory SQLite store, or,
 * when DATABASE_URL names a PostgreSQL server, on a database of its own there.
 */
export async function build (t: Test, settings: Settings = {}): Promise<FastifyInstance> {
  const database = POSTGRES_URL && settings.DATABASE_URL === undefined ? await createDatabase() : undefined
  const app = await buildApp(testConfig({ ...settings, ...(database && { DATABASE_URL: database.url }) }), { logger: false })
  t.teardown(async () => { await app.close(); await database?.drop() })
  await app.ready()
  return app
}

/** Polls `check` until it returns a value other than undefined or false, or fails after the deadline. */
export async function waitFor<T> (
  check: () => Promise<T | undefined | false> | T | undefined | false,
  what: string,
  timeoutMs = 10_000
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

export const anOrder = (orderId: string, extra: Partial<{ user_id: number, item_ids: number[], total_amount: number }> = {}) => ({
  user_id: 1,
  order_id: orderId,
  item_ids: [101, 102, 103],
  total_amount: 59.99,
  ...extra
})

/**
 * A fresh directory, removed when the test ends. Made before what uses it, its removal comes
 * after their teardowns (tap runs them last first); tap's own t.testdir goes before them.
 */
export function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'orders-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Reads a figure every `everyMs` until two reads in a row are within `within` of each other: for
 * something that has no event to say it is over (a count that stops growing, memory that settles).
 */
export async function waitForSteady (
  read: () => Promise<number> | number,
  what: string,
  { everyMs, within = 0, timeoutMs = 60_000 }: { everyMs: number, within?: number, timeoutMs?: number }
): Promise<number> {
  let last = await read()
  let lastAt = Date.now()
  return waitFor(async () => {
    if (Date.now() - lastAt < everyMs) return false
    const value = await read()
    const steady = Math.abs(value - last) <= within
    last = value
    lastAt = Date.now()
    return steady && { value }
  }, what, timeoutMs).then(({ value }) => value)
}
