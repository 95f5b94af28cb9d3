import pino from 'pino'
import { loadConfig, type Config } from './config.ts'
import { openStore } from './store/open-store.ts'
import { configuredProcessor } from './processor.ts'
import { configuredDeliverer } from './webhooks/deliverer.ts'
import { closeOnStopSignals } from './stop-signals.ts'
import type { OrderStore } from './store/order-store.ts'

// A worker process: processes orders from the shared store and serves no HTTP (`npm run worker`).
let config: Config
try {
  config = loadConfig()
} catch (err) {
  console.error(`Invalid configuration: ${(err as Error).message}`)
  process.exit(1)
}
const log = pino({ level: config.LOG_LEVEL })

let store: OrderStore
try {
  store = await openStore(config, log)
} catch (err) {
  console.error(`Could not start: ${(err as Error).message}`)
  process.exit(1)
}
const processor = configuredProcessor(store, config, (err, context) => log.error({ err }, `processor failed while ${context}`))
const deliverer = configuredDeliverer(store, config, (err, context) => log.error({ err }, `webhook deliverer failed while ${context}`))
processor.start()
deliverer.start()
log.info({ concurrency: config.PROCESSOR_CONCURRENCY }, 'worker processing orders')

// SIGTERM/SIGINT: stop claiming, finish in-flight orders and webhook attempts within the grace period, hand back the rest.
closeOnStopSignals(config.SHUTDOWN_GRACE_MS + 5000, log, async () => {
  try {
    const stopped = await Promise.allSettled([processor.stop(config.SHUTDOWN_GRACE_MS), deliverer.stop(config.SHUTDOWN_GRACE_MS)])
    for (const result of stopped) if (result.status === 'rejected') throw result.reason
  } finally {
    await store.close()
  }
})
