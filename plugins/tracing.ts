import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { Span } from '@opentelemetry/api'
import { flushTracing, tracingOn } from '../src/tracing.ts'

/** The server span of each request, by @fastify/otel, while tracing is on (src/tracing.ts); off, nothing is loaded. */
export default fp(async (app) => {
  if (!tracingOn) return
  const { FastifyOtelInstrumentation } = await import('@fastify/otel')
  const instrumentation = new FastifyOtelInstrumentation({
    // A span per request and per handler: one per hook as well (a dozen) would bury the order's own.
    instrumentHooks: false,
    // The semantic conventions' name for an HTTP server span: the method and the route.
    requestHook: (span: Span, request: FastifyRequest) => { span.updateName(`${request.method} ${request.routeOptions.url ?? ''}`.trim()) }
  })
  await app.register(instrumentation.plugin())
  // The key's name (never the key) names the caller, where a key plugin sets it. On sending, not
  // before the handler: a request refused in a hook (a read key on a write, 403) names its caller too.
  app.addHook('onSend', (request, _reply, payload, done) => {
    const name = (request as FastifyRequest & { apiKeyName?: string }).apiKeyName
    if (name !== undefined) request.opentelemetry().span?.setAttribute('enduser.id', name)
    done(null, payload)
  })
  app.addHook('onClose', () => flushTracing())
}, { name: 'tracing', dependencies: ['config'] })
