import type { ServerResponse } from 'node:http'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'
import { OrderIdSchema, OrderStatusSchema } from '../src/order.ts'
import type { OrderChange } from '../src/store/order-store.ts'

/** A comment line this often keeps proxies, and CONNECTION_TIMEOUT_MS, from closing an idle stream. */
const HEARTBEAT_MS = 15_000
/** A client this far behind is disconnected rather than buffered for without end. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024

const StatusEvent = Type.Object({
  order_id: Type.String(),
  status: OrderStatusSchema,
  at: Type.String({ format: 'date-time' }),
  attempts: Type.Integer()
}, { description: 'Sent as `event: status` with this JSON as `data`' })

function toEvent (change: OrderChange): string {
  const data = { order_id: change.order_id, status: change.status, at: new Date(change.at).toISOString(), attempts: change.attempts }
  return `event: status\ndata: ${JSON.stringify(data)}\n\n`
}

interface Follower { only: string | undefined, res: ServerResponse, close: () => void }

const orderStream: FastifyPluginAsyncTypebox = async (app) => {
  const followers = new Set<Follower>()
  // Streams never end by themselves: end them so that shutdown does not wait for them.
  app.addHook('preClose', async () => { for (const follower of followers) follower.close() })

  // One subscription for every stream, held only while one is open, and each batch formatted once
  // for all the streams that follow every order.
  let unsubscribe: (() => void) | null = null
  const broadcast = (changes: OrderChange[]) => {
    let everything: string | undefined
    for (const { only, res, close } of followers) {
      const events = only === undefined
        ? (everything ??= changes.map(toEvent).join(''))
        : changes.filter((c) => c.order_id === only).map(toEvent).join('')
      if (events) res.write(events)
      if (res.writableLength > MAX_BUFFERED_BYTES) close()
    }
  }

  app.get('/orders/stream', {
    schema: {
      tags: ['orders'],
      summary: 'Server-Sent Events of order status changes',
      description: 'Every status change of every order, or of one order_id, in the order they were committed; a comment line every 15 s, or every CONNECTION_TIMEOUT_MS / 2 if that is shorter.',
      querystring: Type.Object({ order_id: Type.Optional(OrderIdSchema) }, { additionalProperties: false }),
      produces: ['text/event-stream'],
      response: { 200: StatusEvent, ...errorResponses(400, 503) }
    }
  }, (request, reply) => {
    const only = request.query.order_id
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.write(': connected\n\n')
    const close = () => {
      if (!followers.delete(follower)) return
      clearInterval(heartbeat)
      if (followers.size === 0) { unsubscribe?.(); unsubscribe = null }
      res.end()
    }
    const follower: Follower = { only, res, close }
    followers.add(follower)
    unsubscribe ??= app.store.onChanges(broadcast)
    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), Math.min(HEARTBEAT_MS, app.config.CONNECTION_TIMEOUT_MS / 2))
    request.raw.on('close', close)
  })
}

export default orderStream
