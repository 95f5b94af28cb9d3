import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'
import { Type } from '@sinclair/typebox'

/** Every error a client sees is `{"error": "..."}` JSON; a 5xx never carries internals. */
export default fp(async (app) => {
  app.setErrorHandler<FastifyError>((err, request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 500
    if (status >= 500) {
      request.log.error({ err }, 'request failed')
      return reply.code(status).send({ error: 'Internal server error' })
    }
    return reply.code(status).send({ error: err.message })
  })
  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ error: `Route ${request.method} ${request.url.split('?')[0]} not found` })
  })
}, { name: 'errors' })

export const ErrorSchema = Type.Object({ error: Type.String({ description: 'what went wrong, for a person to act on' }) })
