import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import validationPlugin from '../plugins/validation.ts'
import { CreatedSchema, OrderIdParams } from '../routes/orders.ts'
import { Metrics, MetricsQuery } from '../routes/order-metrics.ts'
import { HttpTimings } from '../src/http-timings.ts'
import { NewOrderSchema, OrderSchema, toOrder } from '../src/order.ts'

// The physical limit of our stack: bare Fastify with the service's own schemas and validator,
// and no store, no queue, no hooks. Answers are canned but have the service's shape and size.
const app = Fastify({ logger: false, routerOptions: { ignoreTrailingSlash: true } }).withTypeProvider<TypeBoxTypeProvider>()
await app.register(validationPlugin)

const now = Date.now()
const order = (orderId: string) => toOrder({
  seq: 1, order_id: orderId, user_id: 0, item_ids: [12, 57], total_cents: 4312, status: 'Completed',
  created_at: now, processing_started_at: now + 2, completed_at: now + 5, updated_at: now + 5, attempts: 1, last_error: null
})
const timings = new HttpTimings()
for (const route of ['POST /orders', 'GET /orders/:order_id', 'GET /orders/metrics', 'POST /orders/populate']) {
  timings.record(route, { parsing: 0.01, validation: 0.02, handler: 0.05, serialization: 0.01, send: 0.03, total: 0.2 })
}
const group = { count: 0, order_ids: [], truncated: false }
const metrics = {
  total_orders: 1_000_000,
  average_processing_time: 0.0123,
  average_processing_time_from_creation: 0.456,
  average_pending_time: 0.4437,
  pending: group, processing: group, completed: { ...group, count: 1_000_000, truncated: true }, failed: group, cancelled: group,
  http: timings.summary()
}

app.post('/orders', { schema: { body: NewOrderSchema, response: { 201: CreatedSchema } } }, async (request, reply) => {
  return reply.code(201).header('location', `/orders/${request.body.order_id}`)
    .send({ message: 'Order created', order_id: request.body.order_id })
})
app.get('/orders/metrics', { schema: { querystring: MetricsQuery, response: { 200: Metrics } } }, async () => metrics)
app.get('/orders/:order_id', { schema: { params: OrderIdParams, response: { 200: OrderSchema } } },
  async (request) => order(request.params.order_id))
app.get('/health', async () => ({ status: 'ok' }))

await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3001) })
