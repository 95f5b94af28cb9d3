import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import validationPlugin from '../plugins/validation.ts'
import { CreatedSchema, OrderIdParams } from '../routes/orders.ts'
import { Metrics, MetricsQuery } from '../routes/order-metrics.ts'
import { NewOrderSchema, OrderSchema } from '../src/order.ts'
import { readAnswers } from './baseline-answers.ts'

// The physical limit of our stack: bare Fastify with the service's own schemas and validator,
// and no store, no queue, no hooks. Its answers are the service's own, read by the harness just
// before the measurement (bench/baseline-answers.ts): the same shape and size, serialized through
// the same response schemas.
const app = Fastify({ logger: false, routerOptions: { ignoreTrailingSlash: true } }).withTypeProvider<TypeBoxTypeProvider>()
await app.register(validationPlugin)
const { metrics, orders } = readAnswers()

app.post('/orders', { schema: { body: NewOrderSchema, response: { 201: CreatedSchema } } }, async (request, reply) => {
  return reply.code(201).header('location', `/orders/${request.body.order_id}`)
    .send({ message: 'Order created', order_id: request.body.order_id })
})
// Routes without an answer to send are left out: a request to them fails the measurement.
if (metrics) {
  app.get('/orders/metrics', { schema: { querystring: MetricsQuery, response: { 200: Metrics } } }, async () => metrics)
}
if (orders?.length) {
  let next = 0
  app.get('/orders/:order_id', { schema: { params: OrderIdParams, response: { 200: OrderSchema } } }, async (request) => {
    const order = orders[next]!
    next = (next + 1) % orders.length
    return { ...order, order_id: request.params.order_id }
  })
}
app.get('/health', async () => ({ status: 'ok' }))

await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3001) })
