import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'

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
        { name: 'orders', description: 'Create, read, list and cancel orders' },
        { name: 'metrics', description: 'Counts, average stage times and HTTP timings' },
        { name: 'simulation', description: 'Load simulation' },
        { name: 'operations', description: 'Liveness and readiness' }
      ]
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
}, { name: 'docs' })
