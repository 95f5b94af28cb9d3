import { Readable } from 'node:stream'
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'
import { STAGES } from '../src/http/http-timings.ts'
import { ORDER_STATUSES, type OrderStatus } from '../src/order.ts'
import { PROCESSING_STATES, type IdPage, type OrderStore } from '../src/store/order-store.ts'
import { StringEnum } from '../src/string-enum.ts'

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
  processing_state: StringEnum(PROCESSING_STATES, { description: 'running, or paused (POST /processing/pause): then Pending orders wait' }),
  http: Type.Record(Type.String(), RouteTimings, { description: 'per route ("POST /orders"): requests answered, and lifecycle stage timings refreshed at most once a second' })
})

const groupName = (status: OrderStatus) => status.toLowerCase() as Lowercase<OrderStatus>

function average (sumMs: number, count: number): number {
  return count === 0 ? 0 : sumMs / count / 1000
}

/** Ids read per store call while an answer streams. */
const IDS_PER_READ = 1000
/** Streamed JSON goes out in pieces of about this many bytes. */
const PIECE_BYTES = 16 * 1024

/**
 * The metrics as JSON with every status's order ids, read from the store a thousand at a time as
 * the client takes the answer. Built at once, 5 statuses of 100,000 ids of 64 characters (34 MB)
 * would be held for as long as a slow client takes to read them; so each answer holds a few pieces.
 * A store failure before the first piece is a 503 like any other; after it, the connection is cut.
 */
async function * withOrderIds (store: OrderStore, metrics: Static<typeof Metrics>, limit: number): AsyncGenerator<string> {
  let json = '{'
  for (const [i, [key, value]] of Object.entries(metrics).entries()) {
    json += `${i === 0 ? '' : ','}${JSON.stringify(key)}:`
    const status = ORDER_STATUSES.find((s) => groupName(s) === key)
    if (status === undefined) {
      json += JSON.stringify(value)
      continue
    }
    json += `{"count":${metrics[groupName(status)].count},"order_ids":[`
    let listed = 0
    let after: number | null = 0
    while (after !== null && listed < limit) {
      const page: IdPage = await store.idsByStatus(status, Math.min(IDS_PER_READ, limit - listed), after)
      for (const id of page.ids) json += `${listed++ === 0 ? '' : ','}${JSON.stringify(id)}`
      after = page.lastSeq
      if (json.length >= PIECE_BYTES) {
        yield json
        json = ''
      }
    }
    json += `],"truncated":${after !== null}}`
  }
  yield `${json}}`
}

const metrics: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/orders/metrics', {
    schema: {
      operationId: 'getOrderMetrics',
      tags: ['metrics'],
      summary: 'Order counts, average stage times and HTTP timings',
      description: 'Read from running aggregates: its cost does not grow with the number of orders. ' +
        'With getOrderIds=true the answer is streamed while the ids are read, a thousand at a time.',
      querystring: MetricsQuery,
      response: { 200: Metrics, ...errorResponses(400, 500, 503) }
    }
  }, async (request, reply) => {
    const { getOrderIds, limit } = request.query
    const { stats, processing } = await app.store.overview()
    const completed = stats.counts.Completed
    const body: Static<typeof Metrics> = {
      total_orders: ORDER_STATUSES.reduce((sum, status) => sum + stats.counts[status], 0),
      average_processing_time: average(stats.processingMs, completed),
      average_processing_time_from_creation: average(stats.totalMs, completed),
      average_pending_time: average(stats.pendingMs, stats.started),
      ...Object.fromEntries(ORDER_STATUSES.map((status) => {
        const count = stats.counts[status]
        return [groupName(status), { count, order_ids: [] as string[], truncated: count > 0 }]
      })) as Record<Lowercase<OrderStatus>, Static<typeof StatusGroup>>,
      processing_state: processing.state,
      http: app.httpTimings.summary()
    }
    if (!getOrderIds) return body
    // The same JSON as the schema's, streamed: Fastify sends a stream as it is.
    const json = Readable.from(withOrderIds(app.store, body, limit), { objectMode: false })
    return reply.type('application/json; charset=utf-8').send(json as unknown as typeof body)
  })
}

export default metrics
