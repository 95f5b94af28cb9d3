import { randomBytes } from 'node:crypto'
import { claimableAt, type NewOrder } from './order.ts'
import type { OrderStore } from './store/order-store.ts'

/** Orders per bulk transaction: large enough to amortise the commit, small enough to yield often. */
const CHUNK = 5000
/** At most this many error messages are listed; failure_count counts them all. */
const MAX_LISTED_ERRORS = 100

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

/**
 * Creates `sim_<batch>_<i>` for i = 1..total in bulk transactions, yielding between them so that
 * other requests and the processor keep running. Generated chunk by chunk: memory stays flat.
 */
export async function populate (
  store: OrderStore, batchId: string, total: number, pendingDelayMs: number, now: () => number
): Promise<PopulateResult> {
  const errors: string[] = []
  let failures = 0
  for (let first = 1; first <= total; first += CHUNK) {
    const count = Math.min(CHUNK, total - first + 1)
    const orders = Array.from({ length: count }, (_, k) => simulatedOrder(batchId, first + k))
    const createdAt = now()
    const existing = await store.createMany(orders, createdAt, claimableAt(createdAt, pendingDelayMs))
    failures += existing.length
    for (const id of existing.slice(0, MAX_LISTED_ERRORS - errors.length)) errors.push(`Order ${id} already exists`)
    await new Promise((resolve) => setImmediate(resolve))
  }
  return { batch_id: batchId, total_entries: total, success_count: total - failures, failure_count: failures, errors }
}
