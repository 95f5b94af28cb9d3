/** Work a process runs beside its requests: the order processor, the webhook deliverer. */
export interface BackgroundTask {
  start (): void
  /** Finishes what is under way within `graceMs`, hands the rest back; rejects when it could not. */
  stop (graceMs: number): Promise<void>
}

/**
 * The background tasks of a process, started together and stopped side by side: a stop waits for
 * the slowest task's grace period, not for the sum of them. Stopped once: later calls get the
 * same promise, which rejects with the first failure after every task has stopped.
 */
export class BackgroundWork {
  private readonly tasks: BackgroundTask[] = []
  private stopping: Promise<void> | null = null

  add (task: BackgroundTask): void {
    this.tasks.push(task)
  }

  start (): void {
    for (const task of this.tasks) task.start()
  }

  stop (graceMs: number): Promise<void> {
    this.stopping ??= Promise.allSettled(this.tasks.map((task) => task.stop(graceMs))).then((stopped) => {
      for (const result of stopped) if (result.status === 'rejected') throw result.reason
    })
    return this.stopping
  }
}
