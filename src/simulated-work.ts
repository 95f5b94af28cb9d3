import { setTimeout as sleep } from 'node:timers/promises'
import type { Range } from './config.ts'
import type { Claim } from './store/order-store.ts'

export type Work = (claim: Claim) => Promise<void>

/** Stands in for real fulfilment, as the original did: a random wait, and failures at a given rate. */
export function simulatedWork (processingTime: Range, failureRate: number): Work {
  return async () => {
    const ms = processingTime.min + Math.random() * (processingTime.max - processingTime.min)
    if (ms > 0) await sleep(ms)
    if (failureRate > 0 && Math.random() < failureRate) throw new Error('simulated processing failure')
  }
}
