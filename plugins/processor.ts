import fp from 'fastify-plugin'
import { configuredProcessor, configuredStep, type OrderProcessor } from '../src/processing/processor.ts'

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
  app.background.add(processor)
}, { name: 'processor', dependencies: ['config', 'store', 'background'] })
