import type { Claim } from '../store/order-store.ts'

/** What one attempt at an order is given besides its claim. */
export interface AttemptContext {
  /** Aborted when the attempt times out (ATTEMPT_TIMEOUT_MS) or the service stops before it ends. */
  readonly signal: AbortSignal
  /** Which attempt at the order this is, from 1. */
  readonly attempt: number
}

/**
 * One attempt at processing a claimed order: returning or resolving (with a result, or undefined
 * for none) completes the order, throwing or rejecting fails the attempt.
 */
export type Work = (claim: Claim, context: AttemptContext) => unknown

/** The processing step: its work, and whether that reads the order (each claim then brings it from the store). */
export interface ProcessingStep {
  work: Work
  readsOrders: boolean
}
