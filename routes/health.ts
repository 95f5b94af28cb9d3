import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'

const Status = Type.Object({ status: Type.String() })

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', {
    schema: { tags: ['operations'], summary: 'The process is alive', response: { 200: Status } }
  }, async () => ({ status: 'ok' }))

  app.get('/ready', {
    schema: {
      tags: ['operations'],
      summary: 'The store is reachable and takes writes',
      response: { 200: Status, ...errorResponses(503) }
    }
  }, async (request, reply) => {
    try {
      await app.store.ping(Date.now())
      return { status: 'ready' }
    } catch (err) {
      request.log.warn({ err }, 'store not ready')
      return reply.code(503).send({ error: 'Store unavailable: it does not take writes now' })
    }
  })
}

export default health
