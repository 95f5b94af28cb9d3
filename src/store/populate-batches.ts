import type { PopulateBatch } from './order-store.ts'

/** At most this many failed ids are kept with a batch; its failure_count counts them all. */
export const LISTED_FAILURES = 100

/** The batch after its next `handled` entries, of which the ids in `existing` already existed. */
export function advanced (batch: PopulateBatch, handled: number, existing: string[]): PopulateBatch {
  return {
    ...batch,
    entries_done: batch.entries_done + handled,
    failure_count: batch.failure_count + existing.length,
    failed_ids: [...batch.failed_ids, ...existing].slice(0, LISTED_FAILURES)
  }
}
