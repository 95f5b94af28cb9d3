import { performance } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, onResponseHookHandler } from 'fastify'
import { HttpTimings, type RouteHistograms } from '../src/http/http-timings.ts'

declare module 'fastify' {
  interface FastifyInstance {
    httpTimings: HttpTimings
  }
  interface FastifyRequest {
    /**
     * performance.now() when the request reached each lifecycle hook; 0 for a hook it did not
     * reach. Numbers on the request itself, so that timing a request allocates nothing.
     */
    startedAt: number
    validationAt: number
    handlerAt: number
    serializationAt: number
    sendAt: number
  }
}

/** From one mark to the next, or NaN when the request did not reach both. */
function span (from: number, to: number): number {
  return from === 0 || to === 0 ? NaN : to - from
}

/**
 * Times each lifecycle stage of every request for /orders/metrics, and logs requests: each one
 * when ACCESS_LOG is on, and always those slower than SLOW_REQUEST_MS. Fastify's own two lines per
 * request are off (`disableRequestLogging`): they cost 10-20% of a request that does little.
 */
export default fp(async (app) => {
  const timings = new HttpTimings()
  const { ACCESS_LOG: accessLog, SLOW_REQUEST_MS: slowMs } = app.config
  app.decorate('httpTimings', timings)
  for (const mark of ['startedAt', 'validationAt', 'handlerAt', 'serializationAt', 'sendAt'] as const) app.decorateRequest(mark, 0)

  /** Records the request in its route's histograms, and logs it if asked to. */
  function finish (request: FastifyRequest, reply: FastifyReply, route: RouteHistograms, name: string): void {
    const end = performance.now()
    const { startedAt, validationAt, handlerAt, serializationAt, sendAt } = request
    const total = end - startedAt
    route.record(
      span(startedAt, validationAt),
      span(validationAt, handlerAt),
      span(handlerAt, serializationAt || sendAt),
      span(serializationAt, sendAt),
      span(sendAt, end),
      total
    )
    if (accessLog || (slowMs > 0 && total > slowMs)) {
      // The key's name, never the key: who sent it (undefined, and left out, where no key is needed).
      const line = { reqId: request.id, route: name, url: request.url, statusCode: reply.statusCode, responseTimeMs: Math.round(total * 1000) / 1000, apiKeyName: request.apiKeyName }
      if (slowMs > 0 && total > slowMs) request.log.warn(line, 'slow request')
      else request.log.info(line, 'request completed')
    }
  }

  // Callback hooks: an async hook would cost a promise per request per stage.
  app.addHook('onRequest', (request, _reply, done) => { request.startedAt = performance.now(); done() })
  app.addHook('preValidation', (request, _reply, done) => { request.validationAt = performance.now(); done() })
  app.addHook('preHandler', (request, _reply, done) => { request.handlerAt = performance.now(); done() })
  app.addHook('preSerialization', (request, _reply, payload, done) => { request.serializationAt = performance.now(); done(null, payload) })
  app.addHook('onSend', (request, _reply, payload, done) => { request.sendAt = performance.now(); done(null, payload) })

  // Each route records into its own histograms, found when the route is made, not per request
  // (request.routeOptions builds an object on every read). Requests that match no route share one.
  const notFound = timings.route('(not found)')
  app.addHook('onResponse', (request, reply, done) => {
    if (request.is404) finish(request, reply, notFound, '(not found)')
    done()
  })
  app.addHook('onRoute', (routeOptions) => {
    const routes = new Map([routeOptions.method].flat().map((method) => {
      const name = `${method} ${routeOptions.url}`
      return [method, { name, histograms: timings.route(name) }]
    }))
    const record: onResponseHookHandler = (request, reply, done) => {
      const route = routes.get(request.method)
      if (route) finish(request, reply, route.histograms, route.name)
      done()
    }
    routeOptions.onResponse = [...[routeOptions.onResponse ?? []].flat(), record]
  })
}, { name: 'http-timings', dependencies: ['config'] })
