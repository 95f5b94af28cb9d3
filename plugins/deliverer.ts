import fp from 'fastify-plugin'
import { configuredDeliverer, type WebhookDeliverer } from '../src/webhooks/deliverer.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Null in an API-only process (PROCESSOR=off): webhooks are delivered where orders are processed. */
    deliverer: WebhookDeliverer | null
  }
}

export default fp(async (app) => {
  const { config } = app
  if (config.PROCESSOR === 'off') {
    app.decorate('deliverer', null)
    return
  }
  const deliverer = configuredDeliverer(app.store, config, (err, context) => app.log.error({ err }, `webhook deliverer failed while ${context}`))
  app.decorate('deliverer', deliverer)
  app.background.add(deliverer)
}, { name: 'deliverer', dependencies: ['config', 'store', 'background'] })
