import { performance } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { HttpTimings, type Stage } from '../src/http-timings.ts'

declare module 'fastify' {
  interface FastifyInstance {
    httpTimings: HttpTimings
  }
  interface FastifyRequest {
    /** performance.now() at each lifecycle hook this request has reached. */
    marks: Marks | null
  }
}

interface Marks {
  /** Also the start of parsing: nothing runs between onRequest and the body parser. */
  request: number
  validation?: number
  handler?: number
  serialization?: number
  send?: number
}

function mark (request: FastifyRequest, stage: Exclude<keyof Marks, 'request'>): void {
  if (request.marks) request.marks[stage] = performance.now()
}

function span (from: number | undefined, to: number | undefined): number | undefined {
  return from === undefined || to === undefined ? undefined : to - from
}

/** Times each lifecycle stage of every request for /orders/metrics. */
export default fp(async (app) => {
  const timings = new HttpTimings()
  app.decorate('httpTimings', timings)
  app.decorateRequest('marks', null)
  // Callback hooks: an async hook would cost a promise per request per stage.
  app.addHook('onRequest', (request, _reply, done) => { request.marks = { request: performance.now() }; done() })
  app.addHook('preValidation', (request, _reply, done) => { mark(request, 'validation'); done() })
  app.addHook('preHandler', (request, _reply, done) => { mark(request, 'handler'); done() })
  app.addHook('preSerialization', (request, _reply, payload, done) => { mark(request, 'serialization'); done(null, payload) })
  app.addHook('onSend', (request, _reply, payload, done) => { mark(request, 'send'); done(null, payload) })
  app.addHook('onResponse', (request, _reply, done) => {
    const m = request.marks
    if (!m) return done()
    const end = performance.now()
    const stages: Partial<Record<Stage, number>> = {
      parsing: span(m.request, m.validation),
      validation: span(m.validation, m.handler),
      handler: span(m.handler, m.serialization ?? m.send),
      serialization: span(m.serialization, m.send),
      send: span(m.send, end),
      total: end - m.request
    }
    timings.record(`${request.method} ${request.routeOptions.url ?? '(not found)'}`, stages)
    done()
  })
}, { name: 'http-timings' })
