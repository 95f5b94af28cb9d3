import type { OrderStatus } from '../order.ts'
import { ORDER_STATUSES } from '../order.ts'
import type { OrderStats } from './order-store.ts'

export type StatName = OrderStatus | 'started' | 'pending_ms' | 'processing_ms' | 'total_ms'

/** Changes to the running aggregates made by one transaction, written together at its end. */
export class StatsDelta {
  readonly changes = new Map<StatName, number>()

  add (name: StatName, amount: number): this {
    if (amount !== 0) this.changes.set(name, (this.changes.get(name) ?? 0) + amount)
    return this
  }

  /** Adds another transaction's changes to these. */
  merge (other: StatsDelta): this {
    for (const [name, amount] of other.changes) this.add(name, amount)
    return this
  }

  move (from: OrderStatus, to: OrderStatus, count = 1): this {
    return this.add(from, -count).add(to, count)
  }
}

export function statsFromRows (rows: Iterable<{ name: string, value: number }>): OrderStats {
  const values = new Map<string, number>()
  for (const row of rows) values.set(row.name, (values.get(row.name) ?? 0) + Number(row.value))
  const value = (name: StatName) => values.get(name) ?? 0
  return {
    counts: Object.fromEntries(ORDER_STATUSES.map((status) => [status, value(status)])) as Record<OrderStatus, number>,
    started: value('started'),
    pendingMs: value('pending_ms'),
    processingMs: value('processing_ms'),
    totalMs: value('total_ms')
  }
}

const FIELDS: Partial<Record<StatName, 'started' | 'pendingMs' | 'processingMs' | 'totalMs'>> = {
  started: 'started', pending_ms: 'pendingMs', processing_ms: 'processingMs', total_ms: 'totalMs'
}

/** Adds a committed transaction's changes to aggregates kept in memory. */
export function applyDelta (stats: OrderStats, delta: StatsDelta): void {
  for (const [name, amount] of delta.changes) {
    const field = FIELDS[name]
    if (field) stats[field] += amount
    else stats.counts[name as OrderStatus] += amount
  }
}
