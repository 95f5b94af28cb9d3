import fp from 'fastify-plugin'
import type { Registry } from 'prom-client'
import { prometheusMetrics } from '../src/prometheus-metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prometheus: Registry
  }
}

export default fp(async (app) => {
  const { registry, stop } = prometheusMetrics(app.store, app.httpTimings, app.deliverer, app.sweeper)
  app.decorate('prometheus', registry)
  app.addHook('onClose', async () => { stop() })
}, { name: 'prometheus', dependencies: ['store', 'http-timings', 'deliverer', 'sweeper'] })
