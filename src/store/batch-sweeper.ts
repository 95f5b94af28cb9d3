import { performance } from 'node:perf_hooks'

export interface BatchSweeperOptions {
  /** The least pause between two batches. */
  minPauseMs: number
  /** The pause after a batch that failed (the store down, say) before the next try. */
  retryMs: number
  onError: (err: unknown) => void
}

/**
 * Runs background work on the store a bounded batch at a time (deleting the deliveries of a deleted
 * endpoint, old rows past their retention): `batch` does one and says whether there may be more.
 * Between two batches it pauses as long as the last one took (at least `minPauseMs`), so the work
 * holds the database, and on SQLite the event loop, at most about half the time, however much there
 * is. It runs until a batch finds nothing, then waits for `wake`; the work must be found from the
 * database, so that a process restarted after a crash finishes what the last one began (wake it
 * once at start).
 */
export class BatchSweeper {
  private running: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private wokenMeanwhile = false
  private closed = false

  constructor (private readonly batch: () => Promise<boolean>, private readonly options: BatchSweeperOptions) {}

  /** There may be work: runs batches until one finds none. */
  wake (): void {
    if (this.closed || this.timer) return
    if (this.running) {
      this.wokenMeanwhile = true
      return
    }
    this.running = this.run()
  }

  private async run (): Promise<void> {
    let pauseMs: number | null
    const started = performance.now()
    try {
      pauseMs = await this.batch() ? Math.max(this.options.minPauseMs, performance.now() - started) : null
    } catch (err) {
      this.options.onError(err)
      pauseMs = this.options.retryMs
    }
    this.running = null
    if (this.wokenMeanwhile) pauseMs ??= this.options.minPauseMs
    this.wokenMeanwhile = false
    if (this.closed || pauseMs === null) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.wake()
    }, pauseMs)
    this.timer.unref()
  }

  /** Stops: the batch under way finishes, no other starts. */
  async close (): Promise<void> {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    await this.running
  }
}
