import { randomBytes } from 'node:crypto'
import { claimableAt, type NewOrder } from './order.ts'
import type { OrderStore, PopulateBatch } from './store/order-store.ts'

/** Orders per bulk transaction: large enough to amortise the commit, small enough to yield often. */
const CHUNK = 5000

export interface PopulateResult {
  batch_id: string
  total_entries: number
  success_count: number
  failure_count: number
  errors: string[]
}

export function randomBatchId (): string {
  return randomBytes(4).toString('hex')
}

/** A random integer from min to max inclusive; simulated data needs no cryptographic randomness. */
function randomInt (min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1))
}

function simulatedOrder (batchId: string, i: number): NewOrder {
  return {
    order_id: `sim_${batchId}_${i}`,
    user_id: 0,
    item_ids: Array.from({ length: randomInt(1, 3) }, () => randomInt(1, 100)),
    total_amount: randomInt(1000, 10000) / 100
  }
}

/** The answer for a whole batch, however many calls it took. */
function resultOf (batch: PopulateBatch): PopulateResult {
  return {
    batch_id: batch.batch_id,
    total_entries: batch.total_entries,
    success_count: batch.total_entries - batch.failure_count,
    failure_count: batch.failure_count,
    errors: batch.failed_ids.map((id) => `Order ${id} already exists`)
  }
}

/**
 * Creates `sim_<batch>_<i>` for the entries of a batch not handled yet, in bulk transactions that
 * each record how far the batch got, yielding between them so that other requests and the processor
 * keep running. Generated chunk by chunk: memory stays flat. Stops between two chunks once `stop` is
 * aborted (throwing its reason); calling it again with the batch as recorded then finishes it.
 */
export async function populate (
  store: OrderStore, batch: PopulateBatch, pendingDelayMs: number, now: () => number, stop: AbortSignal
): Promise<PopulateResult> {
  let progress = batch
  while (progress.entries_done < progress.total_entries) {
    stop.throwIfAborted()
    const first = progress.entries_done + 1
    const count = Math.min(CHUNK, progress.total_entries - progress.entries_done)
    const orders = Array.from({ length: count }, (_, k) => simulatedOrder(batch.batch_id, first + k))
    const createdAt = now()
    progress = await store.populateChunk(progress, orders, createdAt, claimableAt(createdAt, pendingDelayMs))
    await new Promise((resolve) => setImmediate(resolve))
  }
  return resultOf(progress)
}
