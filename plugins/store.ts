import fp from 'fastify-plugin'
import { openStore } from '../src/store/open-store.ts'
import type { OrderStore } from '../src/store/order-store.ts'

declare module 'fastify' {
  interface FastifyInstance {
    store: OrderStore
  }
}

export default fp(async (app) => {
  const store = await openStore(app.config, app.log)
  app.decorate('store', store)
  app.addHook('onClose', async () => { await store.close() })
}, { name: 'store', dependencies: ['config'] })
