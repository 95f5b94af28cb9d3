import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/errors.ts'
import { HISTORY_SECONDS, PerSecondHistory } from '../src/per-second-history.ts'

const Completions = Type.Object({
  from: Type.String({ format: 'date-time', description: 'the start of the first second counted' }),
  completed: Type.Array(Type.Integer({ minimum: 0 }), {
    minItems: HISTORY_SECONDS,
    maxItems: HISTORY_SECONDS,
    description: `orders completed in each of the last ${HISTORY_SECONDS} seconds, oldest first: completed[i] during the second ` +
      'starting at from + i s; the last entry is the current second, still counting'
  })
}, {
  // Quiet until a burst in the last five seconds.
  examples: [{ from: '2026-02-21T14:55:18.000Z', completed: [...Array<number>(HISTORY_SECONDS - 5).fill(0), 120, 410, 395, 87, 3] }]
})

/**
 * Completions per second over the last five minutes, from this process's own history: the
 * dashboard's chart starts from it, so a page opened after a burst still shows the burst. Kept apart
 * from /orders/metrics, whose answer stays as small as it is (it is benchmarked).
 */
const orderCompletions: FastifyPluginAsyncTypebox = async (app) => {
  const history = new PerSecondHistory()
  // Every process hears every completion (on PostgreSQL through NOTIFY), so API processes that
  // process nothing count the workers' completions too.
  const stop = app.store.onChanges((changes) => { for (const change of changes) history.add(change.at) }, ['Completed'])
  app.addHook('onClose', async () => { stop() })

  app.get('/orders/metrics/completions', {
    schema: {
      operationId: 'getOrderCompletions',
      tags: ['metrics'],
      summary: `Orders completed per second over the last ${HISTORY_SECONDS / 60} minutes`,
      description: 'Counted in memory by each process as it hears of each completion, from every process: a process that ' +
        `started less than ${HISTORY_SECONDS / 60} minutes ago has counted only since it started.`,
      response: { 200: Completions, ...errorResponses(500, 503) }
    }
  }, async () => {
    const { from, counts } = history.window(Date.now())
    return { from: new Date(from).toISOString(), completed: counts }
  })
}

export default orderCompletions
