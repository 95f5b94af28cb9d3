import type { Socket } from 'node:net'
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config.ts'
import configPlugin from '../plugins/config.ts'
import tracingPlugin from '../plugins/tracing.ts'
import validationPlugin from '../plugins/validation.ts'
import errorsPlugin, { answerClientError, sendError } from '../plugins/errors.ts'
import lingeringClosePlugin from '../plugins/lingering-close.ts'
import httpTimingsPlugin from '../plugins/http-timings.ts'
import apiKeyPlugin from '../plugins/api-key.ts'
import crossSitePlugin from '../plugins/cross-site.ts'
import overloadPlugin from '../plugins/overload.ts'
import docsPlugin from '../plugins/docs.ts'
import storePlugin from '../plugins/store.ts'
import backgroundPlugin from '../plugins/background.ts'
import processorPlugin from '../plugins/processor.ts'
import delivererPlugin from '../plugins/deliverer.ts'
import prometheusPlugin from '../plugins/prometheus.ts'
import sweeperPlugin from '../plugins/sweeper.ts'
import healthRoutes from '../routes/health.ts'
import orderRoutes from '../routes/orders.ts'
import orderBatchRoutes from '../routes/order-batch.ts'
import processingRoutes from '../routes/processing.ts'
import orderStreamRoutes from '../routes/order-stream.ts'
import orderMetricsRoutes from '../routes/order-metrics.ts'
import orderCompletionsRoutes from '../routes/order-completions.ts'
import populateRoutes from '../routes/populate.ts'
import prometheusRoutes from '../routes/prometheus.ts'
import dashboardRoutes from '../routes/dashboard.ts'
import webhookRoutes from '../routes/webhooks.ts'

/**
 * CONNECTION_TIMEOUT_MS passed with no traffic: close the connection if it is idle (no response
 * under way) or its client stopped reading one; a request still being handled keeps it.
 */
function closeUnlessAnswering (socket: Socket & { _httpMessage?: unknown }): void {
  // _httpMessage is Node's own record of the response under way on this socket.
  if (!socket._httpMessage || socket.writableLength > 0) socket.destroy()
}

export interface AppOptions {
  /** Pino logger options, or false for none (tests); a test may read the lines through `stream`. */
  logger?: boolean | { level: string, stream?: { write: (line: string) => void } }
}

/** Assembles the service: plugins first (docs must see every route), then one plugin per resource. */
export async function buildApp (config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? { level: config.LOG_LEVEL },
    // Requests log through the service's own logger: a child logger per request, only to bind its
    // id, cost ~3% of a GET (0.67x against 0.69x of bare Fastify in one `npm run bench -- --only
    // get`, 100,000 stored); the lines that need the id name it (plugins/http-timings.ts,
    // plugins/errors.ts). Fastify's two lines per request give way to ACCESS_LOG.
    childLoggerFactory: (logger) => logger,
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true },
    // Errors raised before routing (a malformed or over-long URL) get the same JSON shape.
    frameworkErrors: (err, request, reply) => { sendError(err, request, reply) },
    // Malformed HTTP, oversized headers and timed-out requests, which never reach a route, too.
    clientErrorHandler: answerClientError,
    // Keep-alive connections that sit idle are closed at shutdown instead of holding it open.
    forceCloseConnections: 'idle',
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    connectionTimeout: config.CONNECTION_TIMEOUT_MS,
    http: {
      // Node enforces no request timeout shorter than its 60 s headers timeout: make them one.
      headersTimeout: config.REQUEST_TIMEOUT_MS,
      // Node checks these timeouts every 30 s by default: each second keeps the limit close.
      connectionsCheckingInterval: 1000
    }
  }).withTypeProvider<TypeBoxTypeProvider>()
  // With a listener Node leaves timed-out sockets to it instead of destroying every one.
  app.server.on('timeout', closeUnlessAnswering)
  // Node closes the idle connections once, when the server closes: one whose request was under way
  // then stayed open after its answer until keepAliveTimeout (72 s), and held the close past any
  // grace (20 clients sending back to back: exit 1 after 8 s). Answers sent once closing has begun
  // end their connection.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close')
    done(null, payload)
  })

  await app.register(configPlugin, { config })
  // Before every other hook: the request's span covers them (started by startTracing, else nothing).
  await app.register(tracingPlugin)
  await app.register(validationPlugin)
  await app.register(lingeringClosePlugin)
  await app.register(errorsPlugin)
  // First of the hooks: a request refused by the ones after (overload, another site, no key) is timed too.
  await app.register(httpTimingsPlugin)
  await app.register(overloadPlugin)
  await app.register(crossSitePlugin)
  await app.register(apiKeyPlugin)
  await app.register(docsPlugin)
  await app.register(storePlugin)
  await app.register(backgroundPlugin)
  await app.register(processorPlugin)
  await app.register(delivererPlugin)
  await app.register(sweeperPlugin)
  await app.register(prometheusPlugin)

  await app.register(healthRoutes)
  await app.register(orderStreamRoutes)
  await app.register(orderRoutes)
  await app.register(orderBatchRoutes)
  await app.register(processingRoutes)
  await app.register(orderMetricsRoutes)
  await app.register(orderCompletionsRoutes)
  await app.register(populateRoutes)
  await app.register(prometheusRoutes)
  await app.register(dashboardRoutes)
  await app.register(webhookRoutes)
  return app
}
