import fp from 'fastify-plugin'
import { OrderProcessor } from '../src/processor.ts'
import { simulatedWork } from '../src/simulated-work.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Null in an API-only process (PROCESSOR=off). */
    processor: OrderProcessor | null
  }
}

export default fp(async (app) => {
  const { config } = app
  if (config.PROCESSOR === 'off') {
    app.decorate('processor', null)
    return
  }
  const processor = new OrderProcessor(app.store, {
    concurrency: config.PROCESSOR_CONCURRENCY,
    leaseMs: config.LEASE_MS,
    maxAttempts: config.MAX_ATTEMPTS,
    retryBackoffMs: config.RETRY_BACKOFF_MS,
    work: simulatedWork(config.processingTime, config.FAILURE_RATE),
    onError: (err, context) => app.log.error({ err }, `processor failed while ${context}`)
  })
  app.decorate('processor', processor)
  app.addHook('onReady', async () => { processor.start() })
  // preClose runs before the store's onClose, so claims are handed back while the store is open.
  app.addHook('preClose', async () => { await processor.stop(config.SHUTDOWN_GRACE_MS) })
}, { name: 'processor', dependencies: ['config', 'store'] })
