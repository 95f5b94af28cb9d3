import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ORDER_STATUSES } from '../../order.ts'
import { PROCESSING_STATES, type OrderChange, type ProcessingState } from '../order-store.ts'

/**
 * PostgreSQL refuses a NOTIFY payload of this many bytes or more ("payload string too long"),
 * and the transaction that sent it with it. A change of an order with a 64-character id takes
 * about 130 bytes, so a payload holds some 60 of them.
 */
export const MAX_PAYLOAD_BYTES = 8000

const Timestamp = Type.Integer()
/** A change on the wire, compact: [order_id, status, at, attempts, created_at, processing_started_at]. */
const ChangeRow = Type.Tuple([
  Type.String(),
  Type.Union(ORDER_STATUSES.map((status) => Type.Literal(status))),
  Timestamp,
  Type.Integer({ minimum: 0 }),
  Timestamp,
  Type.Union([Timestamp, Type.Null()])
])
// Any database user may NOTIFY on the service's channels: a payload is checked before it is used.
const changeRows = TypeCompiler.Compile(Type.Array(ChangeRow))

/** The changes of one transaction as NOTIFY payloads, each packed with as many changes as fit. */
export function encodeChanges (changes: OrderChange[]): string[] {
  const payloads: string[] = []
  let rows: string[] = []
  let bytes = 1 // the closing bracket; each row counts itself and the bracket or comma before it
  for (const c of changes) {
    const row = JSON.stringify([c.order_id, c.status, c.at, c.attempts, c.created_at, c.processing_started_at] satisfies Static<typeof ChangeRow>)
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

/** The changes a payload announces; throws on one this service did not send. */
export function decodeChanges (payload: string): OrderChange[] {
  const rows: unknown = JSON.parse(payload)
  if (!changeRows.Check(rows)) throw new Error('not a list of order changes')
  return rows.map(([orderId, status, at, attempts, createdAt, startedAt]) =>
    ({ order_id: orderId, status, at, attempts, created_at: createdAt, processing_started_at: startedAt }))
}

/** The time new work becomes claimable; throws on a payload this service did not send. */
export function decodeAvailableAt (payload: string): number {
  const at = Number(payload)
  if (payload.trim() === '' || !Number.isSafeInteger(at)) throw new Error('not a time in epoch milliseconds')
  return at
}

/** A notification that only says something happened: its payload is empty; throws on one this service did not send. */
export function decodeSignal (payload: string): void {
  if (payload !== '') throw new Error('not an empty payload')
}

const processingState = TypeCompiler.Compile(Type.Object({
  state: Type.Union(PROCESSING_STATES.map((state) => Type.Literal(state))),
  since: Timestamp
}, { additionalProperties: false }))

export function encodeProcessingState ({ state, since }: ProcessingState): string {
  return JSON.stringify({ state, since })
}

/** The processing state a payload announces; throws on one this service did not send. */
export function decodeProcessingState (payload: string): ProcessingState {
  const value: unknown = JSON.parse(payload)
  if (!processingState.Check(value)) throw new Error('not a processing state')
  return value
}
