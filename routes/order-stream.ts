import type { ServerResponse } from 'node:http'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'
import { OrderIdSchema, OrderStatusSchema } from '../src/order.ts'
import type { OrderChange } from '../src/store/order-store.ts'

/** A comment line this often keeps proxies, and CONNECTION_TIMEOUT_MS, from closing an idle stream. */
const HEARTBEAT_MS = 15_000
/** A client this far behind is disconnected rather than buffered for without end. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024
/** Seconds a client refused for MAX_STREAMS is told to wait. */
const RETRY_AFTER_S = 5

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

/** Writes to a stream; a client too far behind is let go. */
function send (follower: Follower, text: string | Buffer): void {
  follower.res.write(text)
  if (follower.res.writableLength > MAX_BUFFERED_BYTES) follower.close()
}

const orderStream: FastifyPluginAsyncTypebox = async (app) => {
  const maxStreams = app.config.MAX_STREAMS
  const heartbeatMs = Math.min(HEARTBEAT_MS, app.config.CONNECTION_TIMEOUT_MS / 2)
  const followers = new Set<Follower>()
  const ofEveryOrder = new Set<Follower>()
  // Followers of one order are found by its id: a change costs the same however many follow other orders.
  const byOrder = new Map<string, Set<Follower>>()

  // The store tells its listeners inside the commit: they only queue the batch, and the writes to
  // the sockets happen on the next turn of the event loop, batches in commit order.
  let queued: OrderChange[][] = []
  const flush = () => {
    const batches = queued
    queued = []
    let everything = ''
    const perFollower = new Map<Follower, string>()
    for (const changes of batches) {
      for (const change of changes) {
        const following = byOrder.get(change.order_id)
        if (ofEveryOrder.size === 0 && following === undefined) continue
        const event = toEvent(change)
        if (ofEveryOrder.size > 0) everything += event
        for (const follower of following ?? []) perFollower.set(follower, (perFollower.get(follower) ?? '') + event)
      }
    }
    if (everything) {
      // Encoded once for all: with 500 streams of every order, 500 encodings of the same text were measurable.
      const bytes = Buffer.from(everything)
      for (const follower of ofEveryOrder) send(follower, bytes)
    }
    for (const [follower, events] of perFollower) send(follower, events)
  }
  const queue = (changes: OrderChange[]) => {
    if (queued.length === 0) setImmediate(flush)
    queued.push(changes)
  }

  // One store subscription and one heartbeat timer for every stream, held only while one is open.
  let unsubscribe: (() => void) | null = null
  let heartbeat: NodeJS.Timeout | null = null
  const open = (follower: Follower) => {
    followers.add(follower)
    if (follower.only === undefined) ofEveryOrder.add(follower)
    else byOrder.set(follower.only, (byOrder.get(follower.only) ?? new Set()).add(follower))
    unsubscribe ??= app.store.onChanges(queue)
    heartbeat ??= setInterval(() => { for (const f of followers) send(f, ': heartbeat\n\n') }, heartbeatMs)
  }
  const closed = (follower: Follower) => {
    followers.delete(follower)
    ofEveryOrder.delete(follower)
    const following = follower.only === undefined ? undefined : byOrder.get(follower.only)
    if (following?.delete(follower) && following.size === 0) byOrder.delete(follower.only as string)
    if (followers.size > 0) return
    unsubscribe?.()
    unsubscribe = null
    if (heartbeat) clearInterval(heartbeat)
    heartbeat = null
  }

  // Streams never end by themselves: end them so that shutdown does not wait for them.
  app.addHook('preClose', async () => { for (const follower of followers) follower.close() })

  app.get('/orders/stream', {
    // A HEAD would be answered by this handler and then held open forever, sending nothing.
    exposeHeadRoute: false,
    schema: {
      operationId: 'streamOrders',
      tags: ['orders'],
      summary: 'Server-Sent Events of order status changes',
      description: 'Every status change of every order, or of one order_id, in the order they were committed; a comment line every 15 s, ' +
        'or every CONNECTION_TIMEOUT_MS / 2 if that is shorter. At most MAX_STREAMS streams are open at once.',
      querystring: Type.Object({ order_id: Type.Optional(OrderIdSchema) }, { additionalProperties: false }),
      // The stream alone is text/event-stream: its errors, answered before it starts, are JSON like every other.
      response: {
        200: { description: 'The stream: one event per status change', content: { 'text/event-stream': { schema: StatusEvent } } },
        ...errorResponses(400, 503)
      }
    }
  }, (request, reply) => {
    if (followers.size >= maxStreams) {
      reply.code(503).header('retry-after', RETRY_AFTER_S)
        .send({ error: `Too many event streams open (MAX_STREAMS is ${maxStreams}): retry after ${RETRY_AFTER_S} s` })
      return
    }
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.write(': connected\n\n')
    const follower: Follower = {
      only: request.query.order_id,
      res,
      close: () => {
        if (!followers.has(follower)) return
        closed(follower)
        res.end()
      }
    }
    open(follower)
    request.raw.on('close', follower.close)
  })

  app.head('/orders/stream', { schema: { hide: true } }, async (_request, reply) => {
    return reply.code(405).header('allow', 'GET').send({ error: 'Method Not Allowed: the HEAD of an event stream would never end; use GET /orders/stream' })
  })
}

export default orderStream
