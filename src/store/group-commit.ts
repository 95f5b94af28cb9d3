import { StoreUnavailableError } from './store-errors.ts'

export type Settled<O> = { ok: true, value: O } | { ok: false, error: unknown }

interface Waiting<I, O> {
  item: I
  resolve: (value: O) => void
  reject: (error: unknown) => void
}

/**
 * Collects the items submitted during one turn of the event loop and writes them in one batch:
 * one commit for many concurrent requests instead of one each. While a batch is being written
 * (an asynchronous store), the next one keeps growing, so batches get larger as load rises.
 * Each caller still learns its own outcome, and one item's failure does not fail the others.
 * At most `maxWaiting` items wait for the next batch: beyond that, while the store is slow or
 * stalled, an item is refused at once (StoreUnavailableError) instead of queueing in memory.
 */
export class GroupCommit<I, O> {
  private waiting: Array<Waiting<I, O>> = []
  private writing = false

  constructor (
    private readonly writeBatch: (items: I[]) => Promise<Array<Settled<O>>> | Array<Settled<O>>,
    private readonly maxWaiting = Infinity
  ) {}

  submit (item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      if (this.waiting.length >= this.maxWaiting) {
        reject(new StoreUnavailableError(`${this.maxWaiting} writes are already waiting for the store`))
        return
      }
      if (this.waiting.push({ item, resolve, reject }) === 1 && !this.writing) this.schedule()
    })
  }

  private schedule (): void {
    setImmediate(() => { void this.flush() })
  }

  private async flush (): Promise<void> {
    const batch = this.waiting
    this.waiting = []
    this.writing = true
    try {
      const results = await this.writeBatch(batch.map((w) => w.item))
      batch.forEach((w, i) => {
        const result = results[i] as Settled<O>
        if (result.ok) w.resolve(result.value)
        else w.reject(result.error)
      })
    } catch (error) {
      for (const w of batch) w.reject(error)
    } finally {
      this.writing = false
      if (this.waiting.length > 0) this.schedule()
    }
  }
}

/** Runs `fn`, capturing its value or its error, for one item of a batch. */
export function attempt<O> (fn: () => O): Settled<O> {
  try {
    return { ok: true, value: fn() }
  } catch (error) {
    return { ok: false, error }
  }
}
