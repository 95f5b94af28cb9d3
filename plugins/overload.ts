import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'

/** Seconds a client is told to wait when the service is overloaded. */
const RETRY_AFTER_S = 5

/** Refuses work with 503 + Retry-After while the event loop lags, instead of queueing it ever later. */
export default fp(async (app) => {
  const maxEventLoopDelay = app.config.MAX_EVENT_LOOP_DELAY_MS
  if (maxEventLoopDelay === 0) return
  await app.register(underPressure, {
    maxEventLoopDelay,
    retryAfter: RETRY_AFTER_S,
    // A 503 error with this message: the error handler sends it as {"error": ...}.
    message: `Service overloaded: retry after ${RETRY_AFTER_S} s`
  })
}, { name: 'overload', dependencies: ['config'] })
