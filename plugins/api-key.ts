import fp from 'fastify-plugin'
import { bearerChecker } from '../src/api-key.ts'
import { closeAfterAnswer } from './lingering-close.ts'

/** Paths anyone may read: probes, the API's documentation and the dashboard page (its data needs the key). */
const OPEN = /^\/(health|ready|docs|dashboard)(\/|$|\?)/

/** With API_KEY set, every other route needs `Authorization: Bearer <API_KEY>`. */
export default fp(async (app) => {
  const key = app.config.API_KEY
  if (!key) return
  const matches = bearerChecker(key)
  app.addHook('onRequest', (request, reply, done) => {
    if (OPEN.test(request.url) || matches(request.headers.authorization)) return done()
    closeAfterAnswer(request, reply)
    reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'Missing or wrong API key: send Authorization: Bearer <API_KEY>' })
  })
}, { name: 'api-key', dependencies: ['config', 'lingering-close'] })
