import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { isoTime } from './iso-time.ts'
import { StringEnum } from './string-enum.ts'

export const ORDER_STATUSES = ['Pending', 'Processing', 'Completed', 'Failed', 'Cancelled'] as const
export type OrderStatus = typeof ORDER_STATUSES[number]

export const OrderStatusSchema = StringEnum(ORDER_STATUSES, {
  description: 'Pending -> Processing -> Completed, or Failed after the last attempt, or Cancelled while Pending'
})

/** Words that name other routes under /orders and so cannot be order ids. */
export const RESERVED_ORDER_IDS = ['metrics', 'populate', 'stream', 'batch', 'retry-failed'] as const

export const OrderIdSchema = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: `^(?!(${RESERVED_ORDER_IDS.join('|')})$)[A-Za-z0-9][A-Za-z0-9._:-]*$`,
  description: `1-64 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit; not ${RESERVED_ORDER_IDS.join(', ')}`,
  examples: ['ORD003']
})

const SafeId = (description: string) => Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description })

export const MAX_TOTAL_AMOUNT = 1e13

export const NewOrderSchema = Type.Object({
  user_id: SafeId('integer from 0 to 2^53-1'),
  order_id: OrderIdSchema,
  item_ids: Type.Array(SafeId('item id, integer from 0 to 2^53-1'), { minItems: 1, maxItems: 1000 }),
  total_amount: Type.Number({
    minimum: 0,
    maximum: MAX_TOTAL_AMOUNT,
    multipleOf: 0.01,
    description: 'amount from 0 to 10^13 with at most 2 decimal places, kept exactly as integer cents',
    examples: [59.99]
  })
}, {
  additionalProperties: false,
  examples: [{ user_id: 1, order_id: 'ORD003', item_ids: [101, 102, 103], total_amount: 59.99 }]
})
export type NewOrder = Static<typeof NewOrderSchema>

/**
 * `type: [T, "null"]` rather than `anyOf`: the serializer then picks the branch by a type check
 * instead of running a validator on every value (that cost GET /orders/:id a third of its speed).
 */
function nullable<T extends TSchema & { type: string }> (schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] })
}
const Timestamp = nullable(Type.String({ format: 'date-time', description: 'ISO 8601 UTC, milliseconds' }))
const Seconds = nullable(Type.Number({ description: 'seconds' }))

export const OrderSchema = Type.Object({
  order_id: Type.String(),
  user_id: Type.Integer(),
  item_ids: Type.Array(Type.Integer()),
  total_amount: Type.Number(),
  status: OrderStatusSchema,
  created_at: Type.String({ format: 'date-time' }),
  processing_started_at: Timestamp,
  completed_at: Timestamp,
  updated_at: Type.String({ format: 'date-time' }),
  pending_duration: Seconds,
  processing_duration: Seconds,
  total_duration: Seconds,
  attempts: Type.Integer({ description: 'processing attempts started so far' }),
  last_error: nullable(Type.String()),
  result: Type.Unknown({
    description: 'what the processing step (PROCESSOR_MODULE) returned, any JSON value; null until the order is Completed, and for the simulated work'
  })
}, {
  examples: [{
    order_id: 'ORD003',
    user_id: 1,
    item_ids: [101, 102, 103],
    total_amount: 59.99,
    status: 'Completed',
    created_at: '2026-02-21T15:00:17.000Z',
    processing_started_at: '2026-02-21T15:00:19.747Z',
    completed_at: '2026-02-21T15:00:24.758Z',
    updated_at: '2026-02-21T15:00:24.758Z',
    pending_duration: 2.747,
    processing_duration: 5.011,
    total_duration: 7.758,
    attempts: 1,
    last_error: null,
    result: { tracking_id: 'TRK-0042' }
  }]
})
export type Order = Static<typeof OrderSchema>

/** An order as a store keeps it: times in epoch milliseconds, money in integer cents. */
export interface OrderRecord {
  seq: number
  order_id: string
  user_id: number
  item_ids: number[]
  total_cents: number
  status: OrderStatus
  created_at: number
  processing_started_at: number | null
  completed_at: number | null
  updated_at: number
  attempts: number
  last_error: string | null
  /** What the processing step returned, as JSON text; null for none. */
  result: string | null
}

/** When a new order may first be claimed: PENDING_DELAY_MS after it was created. */
export function claimableAt (createdAt: number, pendingDelayMs: number): number {
  return createdAt + pendingDelayMs
}

export function toCents (amount: number): number {
  return Math.round(amount * 100)
}

function iso (ms: number | null): string | null {
  return ms === null ? null : isoTime(ms)
}

/** An order's three stage durations in milliseconds, each null until its stage has ended. */
export interface StageDurations { pending: number | null, processing: number | null, total: number | null }

/**
 * The stage durations of an order from its times: waiting (creation to the start of processing),
 * processing (start to completion) and in all (creation to completion). The one definition behind
 * the order's view, the running aggregates, Prometheus' histograms and the tests' recount.
 */
/** Completion time apart, so that callers on the hot path (claims, settles) need not copy a row to ask. */
export function stageDurations (times: Pick<OrderRecord, 'created_at' | 'processing_started_at'>, completed: number | null): StageDurations {
  const { created_at: created, processing_started_at: started } = times
  return {
    pending: started === null ? null : started - created,
    processing: started === null || completed === null ? null : completed - started,
    total: completed === null ? null : completed - created
  }
}

function seconds (ms: number | null): number | null {
  return ms === null ? null : ms / 1000
}

export function toOrder (record: OrderRecord): Order {
  const durations = stageDurations(record, record.completed_at)
  return {
    order_id: record.order_id,
    user_id: record.user_id,
    item_ids: record.item_ids,
    total_amount: record.total_cents / 100,
    status: record.status,
    created_at: isoTime(record.created_at),
    processing_started_at: iso(record.processing_started_at),
    completed_at: iso(record.completed_at),
    updated_at: isoTime(record.updated_at),
    pending_duration: seconds(durations.pending),
    processing_duration: seconds(durations.processing),
    total_duration: seconds(durations.total),
    attempts: record.attempts,
    last_error: record.last_error,
    result: record.result === null ? null : JSON.parse(record.result)
  }
}

/** Same order id, same content: a client retry rather than a different order. */
export function sameOrder (record: OrderRecord, order: NewOrder): boolean {
  return record.user_id === order.user_id &&
    record.total_cents === toCents(order.total_amount) &&
    record.item_ids.length === order.item_ids.length &&
    record.item_ids.every((id, i) => id === order.item_ids[i])
}
