import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { BODY_ERRORS, errorResponses } from '../plugins/errors.ts'
import { BODY_OPTIONAL, noBodyAsEmpty } from '../plugins/validation.ts'
import { PROCESSING_STATES, type ProcessingState } from '../src/store/order-store.ts'
import { StringEnum } from '../src/string-enum.ts'

const ProcessingStateSchema = Type.Object({
  state: StringEnum(PROCESSING_STATES, { description: 'running: orders are processed; paused: no processor claims an order, new ones wait as Pending' }),
  since: Type.String({ format: 'date-time', description: 'when it last changed' })
}, { examples: [{ state: 'paused', since: '2026-02-21T15:00:17.000Z' }] })

// Nothing is read from a body: one that says something (any field) is refused rather than ignored.
const NoBody = Type.Object({}, { additionalProperties: false, description: 'none, or {}: these operations take no input' })

function view ({ state, since }: ProcessingState) {
  return { state, since: new Date(since).toISOString() }
}

const processing: FastifyPluginAsyncTypebox = async (app) => {
  const { store } = app

  app.get('/processing', {
    schema: {
      operationId: 'getProcessing',
      tags: ['processing'],
      summary: 'Whether orders are being processed',
      response: { 200: ProcessingStateSchema, ...errorResponses(500, 503) }
    }
  }, async () => view(await store.processingState()))

  const changes = [
    ['pause', 'paused', 'Pause processing: once this answers, no processor, in any process, takes another order. ' +
      'Orders being processed finish; new orders are accepted and wait as Pending. Kept across restarts.'],
    ['resume', 'running', 'Resume processing: the orders that waited are processed.']
  ] as const
  for (const [action, state, description] of changes) {
    app.post(`/processing/${action}`, {
      schema: {
        operationId: `${action}Processing`,
        tags: ['processing'],
        summary: `${action[0]!.toUpperCase()}${action.slice(1)} order processing`,
        description: `${description} Sending it again changes nothing (since stays). No body, or {}: any field is a 400.`,
        body: NoBody,
        [BODY_OPTIONAL]: true,
        response: { 200: ProcessingStateSchema, ...errorResponses(...BODY_ERRORS) }
      },
      preValidation: noBodyAsEmpty
    }, async () => view(await store.setProcessingState(state, Date.now)))
  }
}

export default processing
