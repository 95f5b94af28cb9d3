import fp from 'fastify-plugin'
import { configuredProcessor, configuredStep, type OrderProcessor } from '../src/processor.ts'

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
  // Loaded before the server listens: a PROCESSOR_MODULE that cannot be used stops the start.
  const step = await configuredStep(config, app.log)
  const processor = configuredProcessor(app.store, config, step, (err, context) => app.log.error({ err }, `processor failed while ${context}`))
  app.decorate('processor', processor)
  app.addHook('onReady', async () => { processor.start() })
  // preClose runs before the store's onClose, so claims are handed back while the store is open.
  app.addHook('preClose', async () => { await processor.stop(config.SHUTDOWN_GRACE_MS) })
}, { name: 'processor', dependencies: ['config', 'store'] })
