import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { MIN_KEY_LENGTH } from '../src/http/api-key.ts'
import { keysRequired, SECURITY_SCHEME } from './api-key.ts'
import { BODY_OPTIONAL } from './validation.ts'

type Operation = { [BODY_OPTIONAL]?: true, requestBody?: { required?: boolean } }
type JsonSchema = { [key: string]: unknown, properties?: Record<string, JsonSchema>, required?: string[], default?: unknown }

/**
 * The same object schema with every property the server defaults left out of `required`. A
 * TypeBox property with a default is required for the handler (Ajv fills it in before the
 * handler runs), but a client may leave it out: the document must say it is optional, or
 * clients generated from it (openapi-typescript) demand every defaulted parameter.
 */
function defaultsOptional (schema: JsonSchema): JsonSchema {
  if (schema.properties === undefined) return schema
  const properties = Object.fromEntries(Object.entries(schema.properties).map(([name, property]) => [name, defaultsOptional(property)]))
  const required = schema.required?.filter((name) => schema.properties?.[name]?.default === undefined)
  return { ...schema, properties, required }
}

/** OpenAPI document generated from the route schemas, at /docs/json, and Swagger UI at /docs. */
export default fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Order service',
        description: 'Takes e-commerce orders, processes them asynchronously through a durable queue, reports their status, timings and metrics.',
        version: '1.0.0'
      },
      tags: [
        { name: 'orders', description: 'Create, read, list, cancel and retry orders' },
        { name: 'processing', description: 'Pause and resume order processing' },
        { name: 'metrics', description: 'Counts, average stage times and HTTP timings' },
        { name: 'simulation', description: 'Load simulation' },
        { name: 'operations', description: 'Liveness and readiness' },
        { name: 'webhooks', description: 'Endpoints that receive status changes, signed by the Standard Webhooks specification' }
      ],
      ...(keysRequired(app.config) && {
        components: {
          securitySchemes: {
            [SECURITY_SCHEME]: {
              type: 'http',
              scheme: 'bearer',
              description: `An API key (${MIN_KEY_LENGTH}+ characters) as \`Authorization: Bearer <key>\`. Scope read: the operations that change ` +
                'nothing (GET, the event stream, /metrics); scope write: every operation. Each operation names the scope it needs.'
            }
          }
        }
      })
    },
    // Only the document changes: validation keeps the route's own schemas.
    transform: ({ schema, url }) => ({
      url,
      schema: schema && {
        ...schema,
        ...(schema.querystring !== undefined && { querystring: defaultsOptional(schema.querystring as JsonSchema) }),
        ...(schema.body !== undefined && { body: defaultsOptional(schema.body as JsonSchema) })
      }
    }),
    // @fastify/swagger marks every body required: not those the route takes as {} when left out.
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject
      const { openapiObject } = document
      const operations = Object.values(openapiObject.paths ?? {}).flatMap((methods) => Object.values(methods ?? {})) as Operation[]
      for (const operation of operations.filter((operation) => BODY_OPTIONAL in operation)) {
        delete operation[BODY_OPTIONAL]
        if (operation.requestBody !== undefined) operation.requestBody.required = false
      }
      return openapiObject
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
}, { name: 'docs' })
