import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'
import { STAGES } from '../src/http-timings.ts'
import { ORDER_STATUSES, type OrderStatus } from '../src/order.ts'

export const MetricsQuery = Type.Object({
  getOrderIds: Type.Boolean({ default: false, description: 'fill order_ids, oldest first' }),
  limit: Type.Integer({ minimum: 1, maximum: 100000, default: 1000, description: 'most order ids listed per status' })
}, { additionalProperties: false })

const StatusGroup = Type.Object({
  count: Type.Integer(),
  order_ids: Type.Array(Type.String()),
  truncated: Type.Boolean({ description: 'true when order_ids does not list every order of this status' })
})

const Milliseconds = Type.Number({ description: 'milliseconds' })
const StageSummary = Type.Object({ mean: Milliseconds, p50: Milliseconds, p95: Milliseconds, p99: Milliseconds, max: Milliseconds })
const RouteTimings = Type.Object({
  count: Type.Integer({ description: 'requests answered' }),
  stages: Type.Object(Object.fromEntries(STAGES.map((stage) => [stage, StageSummary])))
})

const AverageSeconds = (description: string) => Type.Number({ description: `${description}, seconds` })

export const Metrics = Type.Object({
  total_orders: Type.Integer(),
  average_processing_time: AverageSeconds('completed orders, processing start to completion'),
  average_processing_time_from_creation: AverageSeconds('completed orders, creation to completion'),
  average_pending_time: AverageSeconds('orders that started processing, creation to processing start'),
  pending: StatusGroup,
  processing: StatusGroup,
  completed: StatusGroup,
  failed: StatusGroup,
  cancelled: StatusGroup,
  http: Type.Record(Type.String(), RouteTimings, { description: 'per route ("POST /orders"): requests answered, and lifecycle stage timings refreshed at most once a second' })
})

const groupName = (status: OrderStatus) => status.toLowerCase() as Lowercase<OrderStatus>

function average (sumMs: number, count: number): number {
  return count === 0 ? 0 : sumMs / count / 1000
}

const metrics: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/orders/metrics', {
    schema: {
      tags: ['metrics'],
      summary: 'Order counts, average stage times and HTTP timings',
      description: 'Read from running aggregates: its cost does not grow with the number of orders.',
      querystring: MetricsQuery,
      response: { 200: Metrics, ...errorResponses(400, 500, 503) }
    }
  }, async (request) => {
    const { getOrderIds, limit } = request.query
    const stats = await app.store.stats()
    const ids = getOrderIds ? await Promise.all(ORDER_STATUSES.map((status) => app.store.idsByStatus(status, limit))) : null
    const groups = ORDER_STATUSES.map((status, i) => {
      const count = stats.counts[status]
      const page = ids?.[i]
      return [groupName(status), { count, order_ids: page?.ids ?? [], truncated: page ? page.lastSeq !== null : count > 0 }] as const
    })
    const completed = stats.counts.Completed
    return {
      total_orders: ORDER_STATUSES.reduce((sum, status) => sum + stats.counts[status], 0),
      average_processing_time: average(stats.processingMs, completed),
      average_processing_time_from_creation: average(stats.totalMs, completed),
      average_pending_time: average(stats.pendingMs, stats.started),
      ...Object.fromEntries(groups) as Record<Lowercase<OrderStatus>, { count: number, order_ids: string[], truncated: boolean }>,
      http: app.httpTimings.summary()
    }
  })
}

export default metrics
