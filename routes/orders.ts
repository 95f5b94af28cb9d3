import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { BODY_ERRORS, ErrorSchema, errorResponses } from '../plugins/errors.ts'
import { CURSOR_NOT_ISSUED, CursorCodec, ordersList } from '../src/cursor.ts'
import { BODY_OPTIONAL, noBodyAsEmpty } from '../plugins/validation.ts'
import {
  claimableAt, NewOrderSchema, OrderIdSchema, OrderSchema, OrderStatusSchema, toOrder, type OrderRecord, type OrderStatus
} from '../src/order.ts'
import { RETRY_CHUNK, retryFailed } from '../src/retry-failed.ts'
import { LIST_ORDERS, type ListOrder } from '../src/store/order-store.ts'
import { StringEnum } from '../src/string-enum.ts'
import { currentTraceparent, tracingOn } from '../src/tracing.ts'
import { SWEEP_BATCH } from '../src/sweeper.ts'

export const OrderIdParams = Type.Object({ order_id: OrderIdSchema })

export const CreatedSchema = Type.Object({
  message: Type.String(),
  order_id: Type.String()
}, { examples: [{ message: 'Order created', order_id: 'ORD003' }] })

const ListQuery = Type.Object({
  status: Type.Optional(OrderStatusSchema),
  user_id: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  order: StringEnum(LIST_ORDERS, { default: 'asc', description: 'asc: oldest first; desc: newest first' }),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  cursor: Type.Optional(Type.String({
    minLength: 1,
    maxLength: 200,
    description: 'next_cursor of the previous page, with the same order (a cursor of the other order is a 400)'
  }))
}, { additionalProperties: false })

const OrderList = Type.Object({
  orders: Type.Array(OrderSchema),
  next_cursor: Type.Union([Type.String(), Type.Null()], { description: 'pass as cursor for the next page; null on the last page' })
})

const RetryFailedBody = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100_000, default: 100_000, description: 'most Failed orders retried, oldest first' })
}, { additionalProperties: false, examples: [{ limit: 1000 }] })

const RetryFailedResult = Type.Object({
  retried: Type.Integer({ description: 'Failed orders sent back to Pending' }),
  remaining_failed: Type.Integer({ description: 'Failed orders left once done' })
}, { examples: [{ retried: 1000, remaining_failed: 42 }] })

const UserOrdersQuery = Type.Object({
  user_id: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'the customer whose finished orders are erased' })
}, { additionalProperties: false })

const ErasureAccepted = Type.Object({
  message: Type.String(),
  user_id: Type.Integer(),
  follow: Type.String({ description: 'GET this: once the erasure is done it lists none of the customer\'s orders that were Completed, Cancelled or Failed when asked' })
}, { examples: [{ message: 'Erasing the finished orders of user 42', user_id: 42, follow: '/orders?user_id=42' }] })

const notFound = { error: 'Order not found' }

/** The schema of a route that moves one order out of one status. */
function statusChangeSchema (operationId: string, summary: string, description: string, conflict: string) {
  return {
    operationId,
    tags: ['orders'],
    summary,
    description,
    params: OrderIdParams,
    response: {
      200: OrderSchema,
      ...errorResponses(400, 404, 500, 503),
      409: { ...ErrorSchema, description: conflict }
    }
  }
}

/** The answer to moving one order out of `from`: the order as it now is, 404 when there is none, or 409 naming its status. */
function statusChanged (reply: FastifyReply, order: OrderRecord | undefined, changed: boolean, from: OrderStatus, done: string) {
  if (!order) return reply.code(404).send(notFound)
  if (!changed) return reply.code(409).send({ error: `Order is ${order.status}: only a ${from} order can be ${done}` })
  return reply.send(toOrder(order))
}

/** The next page's address: the same filters, order and limit, from its cursor (RFC 8288's Link, rel="next"). */
function nextLink (query: Static<typeof ListQuery>, cursor: string): string {
  const params = new URLSearchParams()
  if (query.status !== undefined) params.set('status', query.status)
  if (query.user_id !== undefined) params.set('user_id', String(query.user_id))
  if (query.order !== 'asc') params.set('order', query.order)
  params.set('limit', String(query.limit))
  params.set('cursor', cursor)
  return `</orders?${params.toString()}>; rel="next"`
}

/** Why a cursor is refused: it belongs to the other order, or to another list (or the service never issued it). */
function cursorError (cursors: CursorCodec, cursor: string, order: ListOrder): string {
  const other = order === 'asc' ? 'desc' : 'asc'
  return cursors.decode(cursor, ordersList(other)) === null
    ? CURSOR_NOT_ISSUED
    : `querystring/cursor was issued for order=${other}: send it with order=${other}, or start again without a cursor`
}

const orders: FastifyPluginAsyncTypebox = async (app) => {
  /** GET's JSON of the orders the store keeps frozen, forgotten with them. */
  const serialized = new WeakMap<OrderRecord, string>()
  const { store, config } = app
  const cursors = new CursorCodec(await store.cursorKey())

  app.post('/orders', {
    schema: {
      operationId: 'createOrder',
      tags: ['orders'],
      summary: 'Create an order',
      description: 'Sending the same order again is safe: an identical body answers 200, a different one 409.',
      body: NewOrderSchema,
      response: {
        201: {
          ...CreatedSchema,
          description: 'Order created',
          headers: { location: Type.String({ description: 'the new order: /orders/<order_id>' }) }
        },
        200: { ...CreatedSchema, description: 'The same order already exists: nothing changed' },
        ...errorResponses(...BODY_ERRORS),
        409: { ...ErrorSchema, description: 'An order with this id exists with different content' }
      }
    }
  }, async (request, reply) => {
    const order = request.body
    const now = Date.now()
    const result = await store.create(order, now, claimableAt(now, config.PENDING_DELAY_MS), tracingOn ? currentTraceparent() : undefined)
    if (result === 'conflict') {
      return reply.code(409).send({ error: `Order ${order.order_id} already exists with different content` })
    }
    if (result === 'exists') return { message: 'Order already exists', order_id: order.order_id }
    return reply.code(201).header('location', `/orders/${order.order_id}`)
      .send({ message: 'Order created', order_id: order.order_id })
  })

  app.get('/orders', {
    schema: {
      operationId: 'listOrders',
      tags: ['orders'],
      summary: 'List orders, oldest first (or newest first with order=desc)',
      description: 'Keyset pagination: stable while orders are being added. Newest first, a page goes on to older orders; ' +
        'orders added meanwhile appear on a fresh first page.',
      querystring: ListQuery,
      response: {
        200: {
          ...OrderList,
          headers: { link: Type.String({ description: 'while there is a next page: </orders?<the same filters, order and limit>&cursor=<next_cursor>>; rel="next" (RFC 8288)' }) }
        },
        ...errorResponses(400, 500, 503)
      }
    }
  }, async (request, reply) => {
    const { status, user_id: userId, order, limit, cursor } = request.query
    const after = cursor === undefined ? undefined : cursors.decode(cursor, ordersList(order))
    if (after === null) return reply.code(400).send({ error: cursorError(cursors, cursor as string, order) })
    const page = await store.list({ status, userId, order, limit, after })
    const next = page.lastSeq === null ? null : cursors.encode(page.lastSeq, ordersList(order))
    if (next !== null) reply.header('link', nextLink(request.query, next))
    return { orders: page.orders.map(toOrder), next_cursor: next }
  })

  app.get('/orders/:order_id', {
    schema: {
      operationId: 'getOrder',
      tags: ['orders'],
      summary: 'Get an order with its status and timings',
      params: OrderIdParams,
      response: { 200: OrderSchema, ...errorResponses(400, 404, 500, 503) }
    }
  }, async (request, reply) => {
    const record = await store.get(request.params.order_id)
    if (!record) return reply.code(404).send(notFound)
    if (!Object.isFrozen(record)) return toOrder(record)
    // A frozen record stays what the store returns until the order changes: its JSON, made by
    // this route's serializer once, is sent again as it is (Fastify sends a JSON string unchanged).
    let json = serialized.get(record)
    if (json === undefined) {
      json = reply.serialize(toOrder(record)) as string
      serialized.set(record, json)
    }
    return reply.type('application/json; charset=utf-8').send(json as unknown as Static<typeof OrderSchema>)
  })

  app.delete('/orders/:order_id', {
    schema: {
      operationId: 'deleteOrder',
      tags: ['orders'],
      summary: 'Erase a finished order',
      description: 'A Completed, Cancelled or Failed order is deleted with every webhook delivery of it (their payloads hold it), ' +
        'pending ones included. A Pending or Processing order is a 409: cancel it first.',
      params: OrderIdParams,
      response: {
        204: Type.Null({ description: 'Erased' }),
        ...errorResponses(400, 404, 500, 503),
        409: { ...ErrorSchema, description: 'The order is Pending or Processing' }
      }
    }
  }, async (request, reply) => {
    const { deleted, order } = await app.sweeper.deleteOrder(request.params.order_id)
    if (!order) return reply.code(404).send(notFound)
    if (!deleted) return reply.code(409).send({ error: `Order is ${order.status}: only a Completed, Cancelled or Failed order can be deleted (cancel it first)` })
    return reply.code(204).send(null)
  })

  app.delete('/orders', {
    schema: {
      operationId: 'deleteUserOrders',
      tags: ['orders'],
      summary: "Erase a customer's finished orders, in the background",
      description: 'Every Completed, Cancelled and Failed order of user_id is erased as DELETE /orders/{order_id} does, in the background, ' +
        `in transactions of ${SWEEP_BATCH.toLocaleString('en')}. Follow it with GET /orders?user_id=N: once done it lists no order that had finished when asked. ` +
        'The erasure is kept in the store until done: one cut short by a stop or a crash is finished after the restart (asking twice is harmless).',
      querystring: UserOrdersQuery,
      response: {
        202: {
          ...ErasureAccepted,
          headers: { location: Type.String({ description: '/orders?user_id=<user_id>: the list that empties of finished orders' }) }
        },
        ...errorResponses(400, 500, 503)
      }
    }
  }, async (request, reply) => {
    const userId = request.query.user_id
    await app.sweeper.eraseUser(userId)
    const follow = `/orders?user_id=${userId}`
    return reply.code(202).header('location', follow).send({ message: `Erasing the finished orders of user ${userId}`, user_id: userId, follow })
  })

  app.post('/orders/:order_id/cancel', {
    schema: statusChangeSchema('cancelOrder', 'Cancel a Pending order', 'A Pending order becomes Cancelled and is never processed.', 'The order is no longer Pending')
  }, async (request, reply) => {
    const { cancelled, order } = await store.cancel(request.params.order_id, Date.now())
    return statusChanged(reply, order, cancelled, 'Pending', 'cancelled')
  })

  app.post('/orders/:order_id/retry', {
    schema: statusChangeSchema('retryOrder', 'Retry a Failed order',
      'The order goes back to Pending, claimable at once, for a fresh run: attempts 0, processing_started_at, completed_at ' +
      'and the durations null again; last_error stays until the next outcome.',
      'The order is not Failed')
  }, async (request, reply) => {
    const { retried, order } = await store.retry(request.params.order_id, Date.now())
    return statusChanged(reply, order, retried, 'Failed', 'retried')
  })

  app.post('/orders/retry-failed', {
    schema: {
      operationId: 'retryFailedOrders',
      tags: ['orders'],
      summary: 'Retry the oldest Failed orders',
      description: 'Retries up to limit Failed orders, oldest first, each as POST /orders/{order_id}/retry does, ' +
        `in transactions of ${RETRY_CHUNK.toLocaleString('en')}. Send {}, or no body, for the default limit.`,
      body: RetryFailedBody,
      [BODY_OPTIONAL]: true,
      response: { 200: RetryFailedResult, ...errorResponses(...BODY_ERRORS) }
    },
    preValidation: noBodyAsEmpty
  }, async (request) => {
    const retried = await retryFailed(store, request.body.limit, Date.now)
    return { retried, remaining_failed: (await store.stats()).counts.Failed }
  })
}

export default orders
