import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'

const prometheus: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/metrics', {
    schema: {
      operationId: 'metrics',
      tags: ['metrics'],
      summary: 'Metrics in the Prometheus text format',
      description: 'Process metrics, orders by status, order stage durations and HTTP lifecycle stage timings.',
      produces: ['text/plain'],
      response: { 200: Type.String({ description: 'Prometheus exposition format 0.0.4' }), ...errorResponses(500, 503) }
    }
  }, async (_request, reply) => {
    return reply.type(app.prometheus.contentType).send(await app.prometheus.metrics())
  })
}

export default prometheus
