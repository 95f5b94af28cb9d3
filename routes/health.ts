import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'

const Status = Type.Object({ status: Type.String() })

const health: FastifyPluginAsyncTypebox = async (app) => {
  // /ready is open to anyone: concurrent checks share one store write, so a flood costs one at a time.
  let check: Promise<void> | null = null
  const ready = () => (check ??= app.store.ping(Date.now()).finally(() => { check = null }))

  app.get('/health', {
    // Liveness: a busy process is alive, so the overload guard lets this through (a probe that
    // got its 503 would restart a process that is merely loaded); /ready still says "not now".
    config: { pressureHandler: () => undefined },
    schema: { operationId: 'health', tags: ['operations'], summary: 'The process is alive: 200 whenever it answers, also while overloaded', response: { 200: Status } }
  }, async () => ({ status: 'ok' }))

  app.get('/ready', {
    schema: {
      operationId: 'ready',
      tags: ['operations'],
      summary: 'The store is reachable and takes writes; 503 while it does not or while the service is overloaded',
      response: { 200: Status, ...errorResponses(503) }
    }
  }, async (request, reply) => {
    try {
      await ready()
      return { status: 'ready' }
    } catch (err) {
      request.log.warn({ err, reqId: request.id }, 'store not ready')
      return reply.code(503).send({ error: 'Store unavailable: it does not take writes now' })
    }
  })
}

export default health
