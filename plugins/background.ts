import fp from 'fastify-plugin'
import { BackgroundWork } from '../src/background-work.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The processor, the deliverer and any other loop that runs beside the requests: started when ready, stopped side by side at close. */
    background: BackgroundWork
  }
}

/**
 * Fastify runs each preClose hook under `pluginTimeout` (10 s: they go through avvio's ready
 * queue, whose callbacks it times), so a grace period awaited there was cut at 10 s whatever
 * SHUTDOWN_GRACE_MS said, and the close failed with "Plugin did not start in time". onClose hooks
 * run in avvio's close queue, untimed. So the stop begins in preClose, beside Fastify's wait for
 * the requests under way, and is awaited in onClose; registered after the store, this onClose
 * runs before the store's (onClose hooks run last registered first), so claims are handed back
 * while the store is open.
 */
export default fp(async (app) => {
  const background = new BackgroundWork()
  const graceMs = app.config.SHUTDOWN_GRACE_MS
  app.decorate('background', background)
  app.addHook('onReady', async () => { background.start() })
  // Its failure is reported by the onClose hook, which awaits the same stop.
  app.addHook('preClose', async () => { background.stop(graceMs).catch(() => {}) })
  app.addHook('onClose', async () => { await background.stop(graceMs) })
}, { name: 'background', dependencies: ['config', 'store'] })
