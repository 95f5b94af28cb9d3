import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { BODY_ERRORS, errorResponses } from '../plugins/errors.ts'
import { claimableAt, NewOrderSchema } from '../src/order.ts'
import type { CreateResult } from '../src/store/order-store.ts'
import { StringEnum } from '../src/string-enum.ts'
import { currentTraceparent, tracingOn } from '../src/tracing.ts'

export const MAX_BATCH_ORDERS = 1000
/**
 * The batch route's body limit: 1 MiB, as for every other route, chosen by measurement. 1,000 orders
 * of 1,000 item ids of 16 digits would be ~17 MB, and a batch costs a few times its size while it
 * is parsed, checked and written. Measured on the compiled server (SQLite, from ~120 MB idle), the
 * peak RSS with 20 clients each sending batches of 1,000 orders at once: 189 MB with 1 MiB bodies,
 * 227 MB with 2 MiB, 322 MB with 4 MiB; with 50 clients: 219 MB with 1 MiB, 298 MB with 2 MiB.
 * Only 1 MiB keeps many clients under the 250 MB goal. It holds 1,000 orders of ~1 KB each (about
 * 57 item ids of 16 digits, or 140 of 6); larger batches are sent in parts.
 */
export const BATCH_BODY_LIMIT = 1024 * 1024

const RESULTS: CreateResult[] = ['created', 'exists', 'conflict']

const BatchBody = Type.Object({
  orders: Type.Array(NewOrderSchema, { minItems: 1, maxItems: MAX_BATCH_ORDERS, description: `1 to ${MAX_BATCH_ORDERS} orders, each as POST /orders takes it` })
}, {
  additionalProperties: false,
  examples: [{
    orders: [
      { user_id: 1, order_id: 'ORD101', item_ids: [101, 102], total_amount: 25.5 },
      { user_id: 2, order_id: 'ORD102', item_ids: [7], total_amount: 9.99 }
    ]
  }]
})

const BatchResult = Type.Object({
  created: Type.Integer({ description: 'orders created' }),
  existing: Type.Integer({ description: 'orders that already existed with the same content: nothing changed' }),
  conflicts: Type.Integer({ description: 'orders whose id exists with different content: not created' }),
  results: Type.Array(Type.Object({
    order_id: Type.String(),
    result: StringEnum(RESULTS, { description: 'created (201 for POST /orders), exists (200) or conflict (409)' })
  }), { description: 'one per order, in the order sent' })
}, {
  examples: [{
    created: 1,
    existing: 0,
    conflicts: 1,
    results: [{ order_id: 'ORD101', result: 'created' }, { order_id: 'ORD102', result: 'conflict' }]
  }]
})

const batch: FastifyPluginAsyncTypebox = async (app) => {
  const { store, config } = app

  app.post('/orders/batch', {
    bodyLimit: BATCH_BODY_LIMIT,
    schema: {
      operationId: 'createOrderBatch',
      tags: ['orders'],
      summary: `Create up to ${MAX_BATCH_ORDERS} orders in one transaction`,
      description: 'Each order means what POST /orders would: created, already existing with the same content, or a conflict; ' +
        'an id sent twice is compared with its first. Any invalid order makes the whole request a 400 naming it, and nothing is created. ' +
        `The body may be up to ${BATCH_BODY_LIMIT / 1024 / 1024} MiB, which holds 1,000 orders of about 1 KB each: send larger batches in parts.`,
      body: BatchBody,
      response: { 200: BatchResult, ...errorResponses(...BODY_ERRORS) }
    }
  }, async (request) => {
    const { orders } = request.body
    const now = Date.now()
    const results = await store.createEach(orders, now, claimableAt(now, config.PENDING_DELAY_MS), tracingOn ? currentTraceparent() : undefined)
    const counts = new Map<CreateResult, number>(RESULTS.map((result) => [result, 0]))
    for (const result of results) counts.set(result, (counts.get(result) as number) + 1)
    return {
      created: counts.get('created') as number,
      existing: counts.get('exists') as number,
      conflicts: counts.get('conflict') as number,
      results: orders.map((order, i) => ({ order_id: order.order_id, result: results[i] as CreateResult }))
    }
  })
}

export default batch
