import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { BODY_ERRORS, ErrorSchema, errorResponses } from '../plugins/errors.ts'
import { populate, randomBatchId } from '../src/populate.ts'
import { LISTED_FAILURES } from '../src/store/populate-batches.ts'
import { BatchConflictError } from '../src/store/store-errors.ts'

const PopulateResult = Type.Object({
  batch_id: Type.String(),
  total_entries: Type.Integer(),
  success_count: Type.Integer(),
  failure_count: Type.Integer(),
  errors: Type.Array(Type.String(), { description: `the first failures (at most ${LISTED_FAILURES})` })
}, { examples: [{ batch_id: 'f3402fae', total_entries: 4, success_count: 4, failure_count: 0, errors: [] }] })

const populateRoute: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store } = app
  if (!config.POPULATE_ENABLED) return
  // A populate of a million orders runs for seconds: shutting down stops it between chunks, as a
  // client that goes away does, instead of holding the shutdown until it ends.
  const shuttingDown = new AbortController()
  app.addHook('preClose', async () => { shuttingDown.abort() })

  app.post('/orders/populate', {
    schema: {
      operationId: 'populateOrders',
      tags: ['simulation'],
      summary: 'Create many simulated orders at once',
      description: 'Creates sim_<batch_id>_<i> for i = 1..total_entries in bulk transactions and answers once all are stored and queued. ' +
        'A populate cut short (a store fault, the client gone) is finished by sending the same batch_id and total_entries again: ' +
        'only the missing orders are created, and the answer counts the whole batch.',
      body: Type.Object({
        total_entries: Type.Integer({ minimum: 1, maximum: config.POPULATE_MAX }),
        batch_id: Type.Optional(Type.String({
          pattern: '^[A-Za-z0-9_-]{1,32}$',
          description: '1-32 characters of A-Z a-z 0-9 _ -; 8 random hex characters when absent'
        }))
      }, { additionalProperties: false, examples: [{ total_entries: 4 }] }),
      response: {
        201: PopulateResult,
        ...errorResponses(...BODY_ERRORS),
        409: { ...ErrorSchema, description: 'This batch_id was used by a populate that finished, was started with another total_entries, or is being populated by another request' }
      }
    }
  }, async (request, reply) => {
    const { total_entries: total, batch_id: batchId = randomBatchId() } = request.body
    const batch = await store.openBatch(batchId, total, Date.now())
    if (batch.total_entries !== total) {
      return reply.code(409).send({
        error: `batch_id ${batchId} was started with total_entries ${batch.total_entries}: send that to finish it, or pick another batch_id`
      })
    }
    if (batch.entries_done === total) {
      return reply.code(409).send({ error: `batch_id ${batchId} was used before; pick another or leave it out` })
    }
    const clientGone = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) clientGone.abort() })
    try {
      const stop = AbortSignal.any([clientGone.signal, shuttingDown.signal])
      return reply.code(201).send(await populate(store, batch, config.PENDING_DELAY_MS, Date.now, stop))
    } catch (err) {
      if (err instanceof BatchConflictError) return reply.code(409).send({ error: err.message })
      // Nobody reads this answer: the client went away, and the populate stopped where it was.
      if (clientGone.signal.aborted) return reply.code(503).send({ error: 'the client went away: send the same request again to finish the populate' })
      if (shuttingDown.signal.aborted) {
        return reply.code(503).header('retry-after', 5).send({ error: 'the service is shutting down: send the same request again to finish the populate' })
      }
      throw err
    }
  })
}

export default populateRoute
