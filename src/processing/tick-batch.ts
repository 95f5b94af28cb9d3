/**
 * Outcomes that end in the same turn of the event loop, written to the store in one call: while
 * one batch is being written the next grows. Written or not (a failed write is reported, and its
 * claims wait for their leases), each batch is then passed to `settled`. Used by the order
 * processor and the webhook deliverer; GroupCommit is for callers that each await their own result.
 */
export class TickBatch<T> {
  private items: T[] = []
  private writing: Promise<void> | null = null

  constructor (private readonly handlers: {
    write: (items: T[]) => Promise<unknown>
    settled: (items: T[]) => void
    onError: (err: unknown) => void
  }) {}

  add (item: T): void {
    this.items.push(item)
    this.writing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flush())
  }

  /** Resolves once every item added so far has been written, or its write has failed. */
  async drained (): Promise<void> {
    while (this.writing) await this.writing
  }

  private async flush (): Promise<void> {
    const batch = this.items
    this.items = []
    try {
      await this.handlers.write(batch)
    } catch (err) {
      this.handlers.onError(err)
    } finally {
      this.handlers.settled(batch)
      this.writing = this.items.length > 0 ? this.flush() : null
    }
  }
}
