import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp } from '../src/app.ts'
import { loadConfig, type Config, type Env } from '../src/config.ts'

export type Settings = Partial<Record<keyof Env, string>>

/** Defaults for tests: an in-memory store and no simulated delays. */
export function testConfig (settings: Settings = {}): Config {
  return loadConfig({
    DATABASE_URL: 'sqlite::memory:',
    PENDING_DELAY_MS: '0',
    PROCESSING_TIME_MS: '0',
    LOG_LEVEL: 'silent',
    ...settings
  })
}

/** Builds the app for one test and closes it when the test ends. */
export async function build (t: Test, settings: Settings = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(settings), { logger: false })
  t.teardown(() => app.close())
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
