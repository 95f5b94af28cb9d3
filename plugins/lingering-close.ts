import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { bodyStillArriving, LingeringClose } from '../src/http/lingering-close.ts'

declare module 'fastify' {
  interface FastifyInstance {
    lingeringClose: LingeringClose
  }
}

/**
 * Call before answering a request early (an error, a refusal in a hook): if its body is still
 * arriving, the answer closes the connection, after a lingering close so that the client still
 * sending reads it.
 */
export function closeAfterAnswer (request: FastifyRequest, reply: FastifyReply): void {
  if (!bodyStillArriving(request.raw)) return
  reply.header('connection', 'close')
  request.server.lingeringClose.afterAnswer(request.raw)
}

/** The connections that linger after an early answer, closed at once when the service shuts down. */
export default fp(async (app) => {
  const lingeringClose = new LingeringClose()
  app.decorate('lingeringClose', lingeringClose)
  app.addHook('preClose', async () => lingeringClose.closeAll())
}, { name: 'lingering-close' })
