import type { OrderStatus } from '../../order.ts'
import type { OrderChange } from '../order-store.ts'

/**
 * PostgreSQL refuses a NOTIFY payload of this many bytes or more ("payload string too long"),
 * and the transaction that sent it with it. A change of an order with a 64-character id takes
 * about 130 bytes, so a payload holds some 60 of them.
 */
export const MAX_PAYLOAD_BYTES = 8000

/** A change on the wire, compact: [order_id, status, at, attempts, created_at, processing_started_at]. */
type ChangeRow = [string, OrderStatus, number, number, number, number | null]

/** The changes of one transaction as NOTIFY payloads, each packed with as many changes as fit. */
export function encodeChanges (changes: OrderChange[]): string[] {
  const payloads: string[] = []
  let rows: string[] = []
  let bytes = 1 // the closing bracket; each row counts itself and the bracket or comma before it
  for (const c of changes) {
    const row = JSON.stringify([c.order_id, c.status, c.at, c.attempts, c.created_at, c.processing_started_at] satisfies ChangeRow)
    const rowBytes = Buffer.byteLength(row) + 1
    if (rows.length > 0 && bytes + rowBytes >= MAX_PAYLOAD_BYTES) {
      payloads.push(`[${rows.join(',')}]`)
      rows = []
      bytes = 1
    }
    rows.push(row)
    bytes += rowBytes
  }
  if (rows.length > 0) payloads.push(`[${rows.join(',')}]`)
  return payloads
}

export function decodeChanges (payload: string): OrderChange[] {
  return (JSON.parse(payload) as ChangeRow[]).map(([orderId, status, at, attempts, createdAt, startedAt]) =>
    ({ order_id: orderId, status, at, attempts, created_at: createdAt, processing_started_at: startedAt }))
}
