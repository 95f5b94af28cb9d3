import type { OrderStore } from './store/order-store.ts'

/**
 * Failed orders retried per transaction. Retrying 100,000 took about as long in chunks of 1,000 as
 * of 5,000 (SQLite 2.5 s and 2.3 s, PostgreSQL 3.4 s and 3.6 s), but a chunk of 5,000 held SQLite's
 * event loop for 114 ms (median) against 24 ms, and PostgreSQL's row locks for 162 ms against 32 ms.
 */
export const RETRY_CHUNK = 1000

/**
 * Sends up to `limit` Failed orders back to Pending, oldest first, a chunk per transaction,
 * yielding between them so that other requests and the processor keep running. Each chunk goes
 * on after the last one: orders that fail again meanwhile wait for the next call. Returns how many.
 */
export async function retryFailed (store: OrderStore, limit: number, now: () => number): Promise<number> {
  let retried = 0
  let after: number | null = 0
  while (after !== null && retried < limit) {
    const chunk = await store.retryFailed(Math.min(RETRY_CHUNK, limit - retried), now(), after)
    retried += chunk.retried
    after = chunk.lastSeq
    await new Promise((resolve) => setImmediate(resolve))
  }
  return retried
}
