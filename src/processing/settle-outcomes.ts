import { errorMessage, readable } from './attempt.ts'
import type { Outcome } from '../store/order-store.ts'
import { isStoreUnavailable } from '../store/store-errors.ts'

/** PostgreSQL's transaction rollback class (40xxx: a deadlock, a serialization failure): the next try may pass. */
const TRANSIENT_CODE = /^40/

/** Whether a failed write may be the fault of what it wrote, rather than of the store at that moment. */
function blamesTheOutcome (err: unknown): boolean {
  if (isStoreUnavailable(err)) return false
  const code = (err as { code?: unknown } | null | undefined)?.code
  return !(typeof code === 'string' && TRANSIENT_CODE.test(code))
}

/**
 * Settles outcomes in one call to `settle`; when that fails for what it was given (not because the
 * store is unreachable), one by one, so that an outcome the store cannot take fails only its own
 * order: it is settled again as a failure that says so, retried if it was to be, its other
 * outcomes all applied. Throws the store's error once the store takes nothing, not even that
 * failure: the outcomes not settled then wait for their leases to end, as after any failed settle.
 */
export async function settleOutcomes (outcomes: Outcome[], settle: (outcomes: Outcome[]) => Promise<unknown>): Promise<void> {
  try {
    await settle(outcomes)
    return
  } catch (err) {
    if (!blamesTheOutcome(err)) throw err
    if (outcomes.length === 1) return settleRefused(outcomes[0] as Outcome, err, settle)
  }
  for (const outcome of outcomes) {
    try {
      await settle([outcome])
    } catch (err) {
      if (!blamesTheOutcome(err)) throw err
      await settleRefused(outcome, err, settle)
    }
  }
}

/**
 * An outcome the store refused, as a failure whose error is the store's reason. A completion fails
 * at once, as a refused result does (the work was done; doing it again would give the same); a
 * failure keeps its retry.
 */
async function settleRefused (outcome: Outcome, err: unknown, settle: (outcomes: Outcome[]) => Promise<unknown>): Promise<void> {
  const why = errorMessage(err)
  const refused: Outcome = outcome.ok
    ? { claim: outcome.claim, ok: false, error: readable(`result refused by the store: ${why}`), retryAt: null }
    : { ...outcome, error: readable(`the attempt failed, and the store refused its error (${why})`) }
  await settle([refused])
}
