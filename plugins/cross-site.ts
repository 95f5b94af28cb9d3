import fp from 'fastify-plugin'
import { crossSiteRule, hostRule } from '../src/http/cross-site.ts'
import { errorResponses } from './errors.ts'
import { closeAfterAnswer } from './lingering-close.ts'

/** Methods that change nothing: any other is refused when a browser sends it from another site. */
export const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

function hostHeaders (rawHeaders: string[]): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.length === 4 && rawHeaders[i]!.toLowerCase() === 'host') count++
  return count
}

/**
 * Requests a browser sends from another site may not change anything (ALLOWED_ORIGINS excepted),
 * and listening on a loopback address only its own host names are served (DNS rebinding).
 * One onRequest hook that only reads headers: a request without Origin or Sec-Fetch-Site costs
 * two lookups and a pass over its raw header names (for a second Host), and the usual Host is remembered.
 */
export default fp(async (app) => {
  const serves = hostRule(app.config.HOST, app.config.ALLOWED_HOSTS)
  const isCrossSite = crossSiteRule(app.config.ALLOWED_ORIGINS)

  app.addHook('onRequest', (request, reply, done) => {
    const { host, origin } = request.headers
    if (hostHeaders(request.raw.rawHeaders) > 1) {
      // Node keeps the first and drops the others: a proxy may have routed by another one (RFC 9112 3.2: a 400).
      closeAfterAnswer(request, reply)
      reply.code(400).send({ error: 'Bad Request: more than one Host header' })
    } else if (serves !== null && host !== undefined && !serves(host)) {
      closeAfterAnswer(request, reply)
      reply.code(421).send({ error: `Misdirected Request: this service answers to Host localhost, 127.0.0.1 or [::1]; add the name to ALLOWED_HOSTS to serve ${host}` })
    } else if (!SAFE_METHODS.has(request.method) && isCrossSite(host, origin, request.headers['sec-fetch-site'])) {
      closeAfterAnswer(request, reply)
      reply.code(403).send({ error: `Forbidden: a browser page from ${origin ?? 'another site'} may not send ${request.method} requests here; add its origin to ALLOWED_ORIGINS to allow it` })
    } else {
      done()
    }
  })

  // Every documented route can answer 421, and those that change something 403.
  app.addHook('onRoute', (route) => {
    if (route.schema?.response === undefined) return
    const changes = [route.method].flat().some((method) => !SAFE_METHODS.has(method))
    route.schema = {
      ...route.schema,
      response: { ...route.schema.response as object, ...(serves && errorResponses(421)), ...(changes && errorResponses(403)) }
    }
  })
}, { name: 'cross-site', dependencies: ['config', 'lingering-close'] })
