import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { BODY_ERRORS, ErrorSchema, errorResponses } from '../plugins/errors.ts'
import { CursorCodec } from '../src/cursor.ts'
import { claimableAt, NewOrderSchema, OrderIdSchema, OrderSchema, OrderStatusSchema, toOrder } from '../src/order.ts'

export const OrderIdParams = Type.Object({ order_id: OrderIdSchema })

export const CreatedSchema = Type.Object({
  message: Type.String(),
  order_id: Type.String()
}, { examples: [{ message: 'Order created', order_id: 'ORD003' }] })

const ListQuery = Type.Object({
  status: Type.Optional(OrderStatusSchema),
  user_id: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'next_cursor of the previous page' }))
}, { additionalProperties: false })

const OrderList = Type.Object({
  orders: Type.Array(OrderSchema),
  next_cursor: Type.Union([Type.String(), Type.Null()], { description: 'pass as cursor for the next page; null on the last page' })
})

const notFound = { error: 'Order not found' }

const orders: FastifyPluginAsyncTypebox = async (app) => {
  const { store, config } = app
  const cursors = new CursorCodec(await store.cursorKey())

  app.post('/orders', {
    schema: {
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
    const result = await store.create(order, now, claimableAt(now, config.PENDING_DELAY_MS))
    if (result === 'conflict') {
      return reply.code(409).send({ error: `Order ${order.order_id} already exists with different content` })
    }
    if (result === 'exists') return { message: 'Order already exists', order_id: order.order_id }
    return reply.code(201).header('location', `/orders/${order.order_id}`)
      .send({ message: 'Order created', order_id: order.order_id })
  })

  app.get('/orders', {
    schema: {
      tags: ['orders'],
      summary: 'List orders, oldest first',
      description: 'Keyset pagination: stable while orders are being added.',
      querystring: ListQuery,
      response: { 200: OrderList, ...errorResponses(400, 500, 503) }
    }
  }, async (request, reply) => {
    const { status, user_id: userId, limit, cursor } = request.query
    const after = cursor === undefined ? undefined : cursors.decode(cursor)
    if (after === null) return reply.code(400).send({ error: 'querystring/cursor is not a cursor this service issued' })
    const page = await store.list({ status, userId, limit, after })
    return {
      orders: page.orders.map(toOrder),
      next_cursor: page.lastSeq === null ? null : cursors.encode(page.lastSeq)
    }
  })

  app.get('/orders/:order_id', {
    schema: {
      tags: ['orders'],
      summary: 'Get an order with its status and timings',
      params: OrderIdParams,
      response: { 200: OrderSchema, ...errorResponses(400, 404, 500, 503) }
    }
  }, async (request, reply) => {
    const record = await store.get(request.params.order_id)
    return record ? toOrder(record) : reply.code(404).send(notFound)
  })

  app.post('/orders/:order_id/cancel', {
    schema: {
      tags: ['orders'],
      summary: 'Cancel a Pending order',
      params: OrderIdParams,
      response: {
        200: OrderSchema,
        ...errorResponses(400, 404, 500, 503),
        409: { ...ErrorSchema, description: 'The order is no longer Pending' }
      }
    }
  }, async (request, reply) => {
    const { cancelled, order } = await store.cancel(request.params.order_id, Date.now())
    if (!order) return reply.code(404).send(notFound)
    if (!cancelled) {
      return reply.code(409).send({ error: `Order is ${order.status}: only a Pending order can be cancelled` })
    }
    return toOrder(order)
  })
}

export default orders
