import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.ts'
import { loadConfig, startFailure, type Config } from './config.ts'
import { closeOnStopSignals } from './stop-signals.ts'
import { shutdown as stopTracing, startTracing } from './tracing.ts'

/** A start that cannot succeed says why in one line, never with a stack trace. */
function fail (message: string): never {
  console.error(message)
  process.exit(1)
}

let config: Config
let app: FastifyInstance
try {
  config = loadConfig()
  await startTracing()
  app = await buildApp(config)
  await app.listen({ host: config.HOST, port: config.PORT })
} catch (err) {
  fail(startFailure(err))
}

// SIGTERM/SIGINT: stop accepting, finish requests and orders within the grace period, exit 0.
closeOnStopSignals(config.SHUTDOWN_GRACE_MS + 5000, app.log, async () => {
  try {
    await app.close()
  } finally {
    // The spans of the last requests and attempts, still buffered.
    await stopTracing()
  }
})
