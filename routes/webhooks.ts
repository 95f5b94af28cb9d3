import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { TSchema } from '@sinclair/typebox'
import { BODY_ERRORS, ErrorSchema, errorResponses } from '../plugins/errors.ts'
import { CURSOR_NOT_ISSUED, CursorCodec, deliveriesList } from '../src/cursor.ts'
import { StringEnum } from '../src/string-enum.ts'
import { eventBody, newDeliveryId } from '../src/store/webhook-events.ts'
import { CIRCUIT_STATES, circuitState, DELIVERY_STATUSES, WEBHOOK_EVENTS, type DeliveryRecord, type EndpointRecord } from '../src/store/webhook-store.ts'
import { checkDestination, RefusedDestination, systemResolve } from '../src/webhooks/destination.ts'
import { newEndpointId, newSecret } from '../src/webhooks/signing.ts'

/** Endpoints one service keeps at most: each status change an endpoint wants costs a row per endpoint. */
export const MAX_ENDPOINTS = 100
const DEFAULT_EVENTS = ['Completed', 'Failed', 'Cancelled'] as const

const nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 UTC, milliseconds' })
const WebhookEventSchema = StringEnum(WEBHOOK_EVENTS, {
  description: 'a status: each change of an order to it is an event (order.completed...); Deleted: each deletion of an order, by retention or erasure (order.deleted)'
})
const Events = Type.Array(WebhookEventSchema, {
  minItems: 1,
  uniqueItems: true,
  description: 'the events sent: the order statuses whose changes are sent, and Deleted for the deletion of orders'
})

const NewEndpointBody = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2000, description: 'http or https URL the events are posted to', examples: ['http://127.0.0.1:4000/webhooks'] }),
  events: Type.Array(WebhookEventSchema, { ...Events, default: [...DEFAULT_EVENTS] }),
  description: Type.Optional(Type.String({ maxLength: 500 }))
}, { additionalProperties: false, examples: [{ url: 'http://127.0.0.1:4000/webhooks', events: ['Completed'] }] })

const EndpointFields = {
  id: Type.String({ examples: ['ep_3Jq0f0tU0bW9XH3bYl8qZw'] }),
  url: Type.String(),
  events: Events,
  description: nullable(Type.String()),
  created_at: Timestamp,
  enabled: Type.Boolean({ description: 'always true: an endpoint receives events until it is deleted' })
}

const CreatedEndpoint = Type.Object({
  ...EndpointFields,
  secret: Type.String({ description: 'whsec_<base64>: verifies webhook-signature. Shown only here: keep it', examples: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'] })
})

const Endpoint = Type.Object({
  ...EndpointFields,
  deliveries: Type.Object({
    pending: Type.Integer({ description: 'recorded, not delivered yet (retries included)' }),
    delivered: Type.Integer({ description: 'answered 2xx' }),
    failed: Type.Integer({ description: 'given up after the last retry; POST /webhooks/:id/redeliver sends them again' })
  }),
  last_error: nullable(Type.String({ description: 'why the latest failed attempt failed' })),
  last_error_at: nullable(Timestamp),
  circuit: Type.Object({
    state: StringEnum(CIRCUIT_STATES, {
      description: 'closed: deliveries flow. open: after WEBHOOK_CIRCUIT_FAILURES failed attempts in a row, its due deliveries wait until retry_at ' +
        '(no attempt counted), or its probe is under way. half_open: the wait is over, the next due delivery goes as a probe; a success closes the circuit'
    }),
    consecutive_failures: Type.Integer({ description: 'failed attempts in a row (up to WEBHOOK_CIRCUIT_FAILURES, then one more per failed probe)' }),
    retry_at: nullable(Timestamp)
  }, { description: "the endpoint's circuit breaker: a receiver that keeps failing is backed off as a whole while the others' deliveries flow" })
})

const Delivery = Type.Object({
  id: Type.String({ description: 'the webhook-id header: the same on every attempt' }),
  order_id: nullable(Type.String({ description: 'null for a test event' })),
  event_type: Type.String({ examples: ['order.completed'] }),
  status: StringEnum(DELIVERY_STATUSES),
  attempts: Type.Integer(),
  next_attempt_at: nullable(Timestamp),
  last_error: nullable(Type.String()),
  last_status_code: nullable(Type.Integer()),
  created_at: Timestamp,
  delivered_at: nullable(Timestamp)
})

const EndpointParams = Type.Object({
  id: Type.String({ pattern: '^ep_[A-Za-z0-9_-]{22}$', description: 'the id POST /webhooks answered' })
})

const DeliveriesQuery = Type.Object({
  status: StringEnum(DELIVERY_STATUSES, { default: 'failed' }),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'next_cursor of the previous page' }))
}, { additionalProperties: false })

const notFound = { ...ErrorSchema, description: 'No webhook endpoint with this id' }
const NOT_FOUND = { error: 'Webhook endpoint not found' }

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

function endpointView (record: EndpointRecord) {
  return {
    id: record.id,
    url: record.url,
    events: record.events,
    description: record.description,
    created_at: new Date(record.created_at).toISOString(),
    enabled: true,
    deliveries: record.counts,
    last_error: record.last_error,
    last_error_at: iso(record.last_error_at),
    circuit: { state: circuitState(record, Date.now()), consecutive_failures: record.consecutive_failures, retry_at: iso(record.circuit_open_until) }
  }
}

function deliveryView (record: DeliveryRecord) {
  return {
    ...record,
    next_attempt_at: iso(record.next_attempt_at),
    created_at: new Date(record.created_at).toISOString(),
    delivered_at: iso(record.delivered_at)
  }
}

const webhooks: FastifyPluginAsyncTypebox = async (app) => {
  const { store, config } = app
  const cursors = new CursorCodec(await store.cursorKey())

  app.post('/webhooks', {
    schema: {
      operationId: 'createWebhook',
      tags: ['webhooks'],
      summary: 'Register a webhook endpoint',
      description: 'Each change of an order to one of `events` is posted to `url`, signed by the Standard Webhooks specification; with Deleted among them, each deletion of an order too (order.deleted, ids only). ' +
        'The URL must be http or https, without a user name or password, and its host must not be (or resolve to) a loopback, private or link-local address unless WEBHOOK_ALLOW_PRIVATE=true.',
      body: NewEndpointBody,
      response: {
        201: { ...CreatedEndpoint, description: 'Registered: the secret is shown this once' },
        ...errorResponses(...BODY_ERRORS),
        409: { ...ErrorSchema, description: `${MAX_ENDPOINTS} endpoints exist already` }
      }
    }
  }, async (request, reply) => {
    const { url, events, description = null } = request.body
    try {
      const destination = await checkDestination(url, { allowPrivate: config.WEBHOOK_ALLOW_PRIVATE, resolve: systemResolve })
      // They would be listed to every API user and never sent: webhook requests carry no Authorization.
      if (destination.url.username !== '' || destination.url.password !== '') {
        return reply.code(400).send({ error: 'body/url: a URL may not hold a user name or password: receivers authenticate webhooks by their signature (webhook-signature, with the secret shown once)' })
      }
    } catch (err) {
      if (err instanceof RefusedDestination) return reply.code(400).send({ error: `body/url: ${err.message}` })
      throw err
    }
    const created = await store.createEndpoint({ id: newEndpointId(), url, events, description, secret: newSecret() }, Date.now(), MAX_ENDPOINTS)
    if (!created) return reply.code(409).send({ error: `At most ${MAX_ENDPOINTS} webhook endpoints: delete one first` })
    return reply.code(201).header('location', `/webhooks/${created.id}`).send({ ...endpointView(created), secret: created.secret })
  })

  app.get('/webhooks', {
    schema: {
      operationId: 'listWebhooks',
      tags: ['webhooks'],
      summary: 'List webhook endpoints, oldest first, with their delivery counts',
      response: { 200: Type.Object({ webhooks: Type.Array(Endpoint) }), ...errorResponses(500, 503) }
    }
  }, async () => ({ webhooks: (await store.endpoints()).map(endpointView) }))

  app.get('/webhooks/:id', {
    schema: {
      operationId: 'getWebhook',
      tags: ['webhooks'],
      summary: 'Get a webhook endpoint with its delivery counts and last error',
      params: EndpointParams,
      response: { 200: Endpoint, ...errorResponses(400, 500, 503), 404: notFound }
    }
  }, async (request, reply) => {
    const record = await store.endpoint(request.params.id)
    return record ? endpointView(record) : reply.code(404).send(NOT_FOUND)
  })

  app.delete('/webhooks/:id', {
    schema: {
      operationId: 'deleteWebhook',
      tags: ['webhooks'],
      summary: 'Delete a webhook endpoint and its deliveries',
      description: 'Gone at once: no event is recorded for it after. Its deliveries are removed in the background; ' +
        'its pending ones are not sent, an attempt under way may still arrive.',
      params: EndpointParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(400, 500, 503), 404: notFound }
    }
  }, async (request, reply) => {
    if (!await store.deleteEndpoint(request.params.id, Date.now())) return reply.code(404).send(NOT_FOUND)
    return reply.code(204).send(null)
  })

  app.post('/webhooks/:id/test', {
    schema: {
      operationId: 'testWebhook',
      tags: ['webhooks'],
      summary: 'Send a webhook.test event to an endpoint',
      description: 'Recorded and delivered like the order events, with retries.',
      params: EndpointParams,
      response: {
        202: Type.Object({ delivery_id: Type.String({ description: 'its webhook-id' }), event_type: Type.Literal('webhook.test') }, { description: 'Recorded: it is being delivered' }),
        ...errorResponses(400, 500, 503),
        404: notFound
      }
    }
  }, async (request, reply) => {
    const { id } = request.params
    const now = Date.now()
    const delivery = {
      id: newDeliveryId(),
      endpoint_id: id,
      order_id: null,
      event_type: 'webhook.test',
      payload: eventBody('webhook.test', now, { endpoint_id: id, message: 'A test event from the order service' }),
      created_at: now
    }
    if (!await store.queueDelivery(delivery, now)) return reply.code(404).send(NOT_FOUND)
    return reply.code(202).send({ delivery_id: delivery.id, event_type: 'webhook.test' as const })
  })

  app.post('/webhooks/:id/redeliver', {
    schema: {
      operationId: 'redeliverWebhook',
      tags: ['webhooks'],
      summary: "Send an endpoint's failed deliveries again",
      description: 'They are pending again, due at once, with their retries counted afresh and their webhook-id unchanged.',
      params: EndpointParams,
      response: {
        200: Type.Object({ redelivered: Type.Integer({ description: 'deliveries that were failed and are pending again' }) }),
        ...errorResponses(400, 500, 503),
        404: notFound
      }
    }
  }, async (request, reply) => {
    const redelivered = await store.redeliver(request.params.id, Date.now())
    return redelivered === undefined ? reply.code(404).send(NOT_FOUND) : { redelivered }
  })

  app.get('/webhooks/:id/deliveries', {
    schema: {
      operationId: 'listWebhookDeliveries',
      tags: ['webhooks'],
      summary: "List an endpoint's deliveries in one state, newest first",
      querystring: DeliveriesQuery,
      params: EndpointParams,
      response: {
        200: Type.Object({
          deliveries: Type.Array(Delivery),
          next_cursor: nullable(Type.String({ description: 'pass as cursor for the next page; null on the last page' }))
        }),
        ...errorResponses(400, 500, 503),
        404: notFound
      }
    }
  }, async (request, reply) => {
    const { status, limit, cursor } = request.query
    const list = deliveriesList(request.params.id)
    const before = cursor === undefined ? undefined : cursors.decode(cursor, list)
    if (before === null) return reply.code(400).send({ error: CURSOR_NOT_ISSUED })
    if (!await store.endpoint(request.params.id)) return reply.code(404).send(NOT_FOUND)
    const page = await store.deliveries(request.params.id, { status, limit, before })
    return {
      deliveries: page.deliveries.map(deliveryView),
      next_cursor: page.lastSeq === null ? null : cursors.encode(page.lastSeq, list)
    }
  })
}

export default webhooks
