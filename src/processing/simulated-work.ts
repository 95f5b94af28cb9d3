import { setTimeout as sleep } from 'node:timers/promises'
import type { Range } from '../config.ts'
import type { ProcessingStep } from './processing-step.ts'

/** Stands in for real fulfilment, as the original did: a random wait, and failures at a given rate; no result. */
export function simulatedWork (processingTime: Range, failureRate: number): ProcessingStep {
  return {
    readsOrders: false,
    work: async (_claim, context) => {
      const ms = processingTime.min + Math.random() * (processingTime.max - processingTime.min)
      // The signal is made only when there is a wait for it to cut short: making one costs ~3 us.
      if (ms > 0) await sleep(ms, undefined, { signal: context.signal })
      if (failureRate > 0 && Math.random() < failureRate) throw new Error('simulated processing failure')
    }
  }
}
