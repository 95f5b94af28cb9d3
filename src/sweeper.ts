import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises'
import type { Retention } from './config.ts'
import type { DeleteReason, DeleteResult, FinishedStatus, OrderStore } from './store/order-store.ts'

/**
 * Rows one sweep transaction deletes at most. On SQLite a batch runs on the event loop: 1,000
 * finished orders (their index entries and aggregates included) take a few milliseconds, about
 * what a group commit of creates takes; on PostgreSQL it bounds how long the rows stay locked.
 */
export const SWEEP_BATCH = 1000
/** How often retention looks for expired rows: a finished order outlives its retention by about this much. */
export const SWEEP_INTERVAL_MS = 1000

export type DeletionListener = (what: { orders: number, reason: DeleteReason } | { deliveries: number }) => void

export interface SweeperOptions {
  retention: Retention
  onError: (err: unknown, context: string) => void
  batch?: number
  intervalMs?: number
}

/**
 * Deletes what retention no longer keeps and erases customers' orders, in bounded batches, each one
 * store transaction (a process killed mid-sweep has committed whole batches or nothing of one),
 * yielding to other work between them. One loop per process; on PostgreSQL the store lets one
 * process sweep at a time.
 */
export class Sweeper {
  private readonly listeners = new Set<DeletionListener>()
  private readonly batch: number
  private readonly intervalMs: number
  private running: Promise<void> | null = null
  private stopped = false
  private wake = new AbortController()

  constructor (private readonly store: OrderStore, private readonly options: SweeperOptions) {
    this.batch = options.batch ?? SWEEP_BATCH
    this.intervalMs = options.intervalMs ?? SWEEP_INTERVAL_MS
  }

  onDeleted (listener: DeletionListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private emit (what: Parameters<DeletionListener>[0]): void {
    for (const listener of this.listeners) listener(what)
  }

  start (): void {
    this.running ??= this.loop()
  }

  /** Ends the loop after the batch under way (committed whole); an erasure not finished is kept in the store, for the next start (or another process) to finish. */
  async stop (): Promise<void> {
    this.stopped = true
    this.wake.abort()
    await this.running
  }

  /** Erases a finished order (and its webhook deliveries) now. */
  async deleteOrder (orderId: string): Promise<DeleteResult> {
    const result = await this.store.deleteOrder(orderId)
    if (result.deleted) this.emit({ orders: 1, reason: 'erasure' })
    return result
  }

  /** Records that every finished order of one customer is to be erased, then erases them in the background; asked again while waiting, once. */
  async eraseUser (userId: number): Promise<void> {
    await this.store.requestErasure(userId, Date.now())
    this.wake.abort()
  }

  private async loop (): Promise<void> {
    while (!this.stopped) {
      // A new erasure during the pass aborts this: the next pass starts at once.
      this.wake = new AbortController()
      try {
        await this.sweep(Date.now())
      } catch (err) {
        this.options.onError(err, 'sweeping')
      }
      if (this.stopped) break
      await sleep(this.intervalMs, undefined, { signal: this.wake.signal }).catch(() => {})
    }
  }

  /** One pass: the erasures waiting (up to a batch of them), then every kind of expired row, each until a batch comes back short. */
  async sweep (now: number): Promise<void> {
    for (const userId of await this.store.erasures(this.batch)) {
      await this.drain((limit) => this.store.deleteUserOrders(userId, limit), (orders) => this.emit({ orders, reason: 'erasure' }))
    }
    const { orders, failedOrders, deliveries } = this.options.retention
    const statuses: Array<[FinishedStatus, number | null]> = [['Completed', orders], ['Cancelled', orders], ['Failed', failedOrders]]
    for (const [status, keepMs] of statuses) {
      if (keepMs === null) continue
      await this.drain((limit) => this.store.sweepOrders(status, now - keepMs, limit), (count) => this.emit({ orders: count, reason: 'retention' }))
    }
    if (orders !== null) await this.drain((limit) => this.store.sweepBatches(now - orders, limit), () => {})
    if (deliveries !== null) await this.drain((limit) => this.store.sweepDeliveries(now - deliveries, limit), (count) => this.emit({ deliveries: count }))
  }

  /** Runs batches until one deletes fewer than a batch, letting other work run between them. */
  private async drain (batch: (limit: number) => Promise<number>, deleted: (count: number) => void): Promise<void> {
    while (!this.stopped) {
      const count = await batch(this.batch)
      if (count > 0) deleted(count)
      if (count < this.batch) return
      await yieldTurn()
    }
  }
}
