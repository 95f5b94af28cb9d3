import pino from 'pino'
import { loadConfig, startFailure, type Config } from './config.ts'
import { openStore } from './store/open-store.ts'
import { configuredProcessor, configuredStep } from './processing/processor.ts'
import type { ProcessingStep } from './processing/processing-step.ts'
import { configuredDeliverer } from './webhooks/deliverer.ts'
import { closeOnStopSignals } from './stop-signals.ts'
import { shutdown as stopTracing, startTracing } from './tracing.ts'
import { BackgroundWork } from './background-work.ts'
import type { OrderStore } from './store/order-store.ts'

// A worker process: processes orders from the shared store and serves no HTTP (`npm run worker`).
let config: Config
let log: pino.Logger
let step: ProcessingStep
let store: OrderStore
try {
  config = loadConfig()
  log = pino({ level: config.LOG_LEVEL })
  await startTracing()
  // Before the store: a PROCESSOR_MODULE that cannot be used stops the start without touching the database.
  step = await configuredStep(config, log)
  store = await openStore(config, log)
} catch (err) {
  console.error(startFailure(err))
  process.exit(1)
}
const processor = configuredProcessor(store, config, step, (err, context) => log.error({ err }, `processor failed while ${context}`))
const deliverer = configuredDeliverer(store, config, (err, context) => log.error({ err }, `webhook deliverer failed while ${context}`))
const background = new BackgroundWork()
background.add(processor)
background.add(deliverer)
background.start()
log.info({ concurrency: config.PROCESSOR_CONCURRENCY }, 'worker processing orders')

// SIGTERM/SIGINT: stop claiming, finish in-flight orders and webhook attempts within the grace period, hand back the rest.
closeOnStopSignals(config.SHUTDOWN_GRACE_MS + 5000, log, async () => {
  try {
    await background.stop(config.SHUTDOWN_GRACE_MS)
  } finally {
    await store.close()
    // The spans of the last attempts, still buffered.
    await stopTracing()
  }
})
