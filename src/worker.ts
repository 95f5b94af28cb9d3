import pino from 'pino'
import { loadConfig, type Config } from './config.ts'
import { openStore } from './store/open-store.ts'
import { configuredProcessor } from './processor.ts'
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
processor.start()
log.info({ concurrency: config.PROCESSOR_CONCURRENCY }, 'worker processing orders')

// SIGTERM/SIGINT: stop claiming, finish in-flight orders within the grace period, hand back the rest.
closeOnStopSignals(config.SHUTDOWN_GRACE_MS + 5000, log, async () => {
  try {
    await processor.stop(config.SHUTDOWN_GRACE_MS)
  } finally {
    await store.close()
  }
})
