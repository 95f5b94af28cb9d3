import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Test } from 'tap'
import { Webhook } from 'standardwebhooks'

/** One request the receiver got, as it came, and whether its signature verified. */
export interface Received {
  id: string
  timestamp: number
  path: string
  raw: string
  body: { type: string, timestamp: string, data: { order_id?: string, status?: string, [field: string]: unknown } }
  verified: boolean
}

/** What the receiver answers a request with; it may also write the reply itself. */
export type Behaviour = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> | unknown

/**
 * A webhook receiver for tests: a Fastify server on a random port of 127.0.0.1 that verifies each
 * request with the `standardwebhooks` package (the secret set by the test), records it, and
 * answers as `behaviour` says (204 by default). It counts attempts of one webhook-id under way at
 * once, and can go down and come back on the same port.
 */
export class WebhookReceiver {
  readonly received: Received[] = []
  secret = ''
  behaviour: Behaviour = async (_request, reply) => reply.code(204).send()
  /** The most requests of one webhook-id ever under way together. */
  maxConcurrentPerId = 0
  private readonly underWay = new Map<string, number>()
  private server: FastifyInstance | null = null
  private port = 0

  static async start (t: Test): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver()
    await receiver.up()
    t.teardown(() => receiver.down())
    return receiver
  }

  url (path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`
  }

  /** Listens (again, on the same port after the first time). */
  async up (): Promise<void> {
    const server = Fastify({ forceCloseConnections: true })
    server.removeAllContentTypeParsers()
    server.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 10 * 1024 * 1024 }, (_request, body, done) => { done(null, body) })
    server.post('/*', async (request, reply) => {
      const id = String(request.headers['webhook-id'])
      const now = (this.underWay.get(id) ?? 0) + 1
      this.underWay.set(id, now)
      this.maxConcurrentPerId = Math.max(this.maxConcurrentPerId, now)
      try {
        const raw = request.body as string
        let verified = true
        try {
          new Webhook(this.secret).verify(raw, request.headers as Record<string, string>)
        } catch {
          verified = false
        }
        this.received.push({ id, timestamp: Number(request.headers['webhook-timestamp']), path: request.url, raw, body: JSON.parse(raw), verified })
        return await this.behaviour(request, reply)
      } finally {
        this.underWay.set(id, (this.underWay.get(id) ?? 1) - 1)
      }
    })
    await server.listen({ host: '127.0.0.1', port: this.port })
    this.port = (server.server.address() as { port: number }).port
    this.server = server
  }

  /** Stops listening and cuts every connection: attempts are refused until up() again. */
  async down (): Promise<void> {
    await this.server?.close()
    this.server = null
  }

  /** Received requests by webhook-id. */
  byId (): Map<string, Received[]> {
    const ids = new Map<string, Received[]>()
    for (const request of this.received) ids.set(request.id, [...(ids.get(request.id) ?? []), request])
    return ids
  }
}

/** Settings that let an app deliver to a receiver on 127.0.0.1. */
export const ALLOW_PRIVATE = { WEBHOOK_ALLOW_PRIVATE: 'true' }

/** Subscribes `receiver` (at `path`) to `events` through the app's API; the receiver verifies with the endpoint's secret. */
export async function subscribe (app: FastifyInstance, receiver: WebhookReceiver, events: string[], path = '/hook'): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/webhooks', payload: { url: receiver.url(path), events } })
  if (res.statusCode !== 201) throw new Error(res.body)
  receiver.secret = res.json().secret
  return res.json().id
}

/** GET /webhooks/:id, as JSON. */
export const endpointView = async (app: FastifyInstance, id: string) => (await app.inject({ url: `/webhooks/${id}` })).json()
