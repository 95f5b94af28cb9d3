import fp from 'fastify-plugin'
import { Sweeper } from '../src/sweeper.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Deletes what retention no longer keeps, and erases orders (DELETE /orders...). */
    sweeper: Sweeper
  }
}

// In every process, API-only ones included: on PostgreSQL the store lets one sweep at a time.
export default fp(async (app) => {
  const sweeper = new Sweeper(app.store, {
    retention: app.config.retention,
    onError: (err, context) => { app.log.error({ err }, `sweeper failed while ${context}`) }
  })
  app.decorate('sweeper', sweeper)
  // Stopped beside the processor and the deliverer: the batch under way commits while the store is open.
  app.background.add(sweeper)
}, { name: 'sweeper', dependencies: ['config', 'store', 'background'] })
