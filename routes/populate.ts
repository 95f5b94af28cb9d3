import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { BODY_ERRORS, ErrorSchema, errorResponses } from '../plugins/errors.ts'
import { populate, randomBatchId } from '../src/populate.ts'

const PopulateResult = Type.Object({
  batch_id: Type.String(),
  total_entries: Type.Integer(),
  success_count: Type.Integer(),
  failure_count: Type.Integer(),
  errors: Type.Array(Type.String(), { description: 'the first failures (at most 100)' })
}, { examples: [{ batch_id: 'f3402fae', total_entries: 4, success_count: 4, failure_count: 0, errors: [] }] })

const populateRoute: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store } = app
  if (!config.POPULATE_ENABLED) return

  app.post('/orders/populate', {
    schema: {
      tags: ['simulation'],
      summary: 'Create many simulated orders at once',
      description: 'Creates sim_<batch_id>_<i> for i = 1..total_entries in bulk transactions and answers once all are stored and queued.',
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
        409: { ...ErrorSchema, description: 'This batch_id was used before' }
      }
    }
  }, async (request, reply) => {
    const { total_entries: total, batch_id: batchId = randomBatchId() } = request.body
    if (!await store.reserveBatch(batchId, total, Date.now())) {
      return reply.code(409).send({ error: `batch_id ${batchId} was used before; pick another or leave it out` })
    }
    return reply.code(201).send(await populate(store, batchId, total, config.PENDING_DELAY_MS, Date.now))
  })
}

export default populateRoute
