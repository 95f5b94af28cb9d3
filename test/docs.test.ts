import t from 'tap'
import { Validator } from '@seriousme/openapi-schema-validator'
import { build } from './helper.ts'
import { OPERATION_IDS } from './support/operation-ids.ts'

const ROUTES: Record<string, Record<string, string[]>> = {
  '/orders': { post: ['200', '201', '400', '409', '413', '415', '500', '503'], get: ['200', '400', '500', '503'] },
  '/orders/{order_id}': { get: ['200', '400', '404', '500', '503'] },
  '/orders/{order_id}/cancel': { post: ['200', '400', '404', '409', '500', '503'] },
  '/orders/{order_id}/retry': { post: ['200', '400', '404', '409', '500', '503'] },
  '/orders/retry-failed': { post: ['200', '400', '413', '415', '500', '503'] },
  '/orders/batch': { post: ['200', '400', '413', '415', '500', '503'] },
  '/processing': { get: ['200', '500', '503'] },
  '/processing/pause': { post: ['200', '400', '413', '415', '500', '503'] },
  '/processing/resume': { post: ['200', '400', '413', '415', '500', '503'] },
  '/orders/metrics': { get: ['200', '400', '500', '503'] },
  '/orders/metrics/completions': { get: ['200', '500', '503'] },
  '/orders/populate': { post: ['201', '400', '409', '413', '415', '500', '503'] },
  '/orders/stream': { get: ['200', '400', '503'] },
  '/metrics': { get: ['200', '500', '503'] },
  '/dashboard': { get: ['200'] },
  '/health': { get: ['200'] },
  '/ready': { get: ['200', '503'] },
  '/webhooks': { post: ['201', '400', '409', '413', '415', '500', '503'], get: ['200', '500', '503'] },
  '/webhooks/{id}': { get: ['200', '400', '404', '500', '503'], delete: ['204', '400', '404', '500', '503'] },
  '/webhooks/{id}/test': { post: ['202', '400', '404', '500', '503'] },
  '/webhooks/{id}/redeliver': { post: ['200', '400', '404', '500', '503'] },
  '/webhooks/{id}/deliveries': { get: ['200', '400', '404', '500', '503'] }
}

t.test('GET /docs/json is a valid OpenAPI 3 document of every route and response', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const res = await app.inject({ url: '/docs/json' })
  t.equal(res.statusCode, 200)
  const doc = res.json()
  t.match(doc.openapi, /^3\./)
  const result = await new Validator().validate(doc)
  t.same(result.errors, undefined, 'no validation errors')
  t.equal(result.valid, true)
  for (const [path, methods] of Object.entries(ROUTES)) {
    for (const [method, codes] of Object.entries(methods)) {
      const operation = doc.paths[path]?.[method]
      t.ok(operation, `${method.toUpperCase()} ${path} is documented`)
      // Besides its own: 421 (a Host not of this service) on every route, 403 (cross-site) on those that change something.
      const expected = [...codes, '421', ...(method === 'get' ? [] : ['403'])].sort()
      t.same(Object.keys(operation?.responses ?? {}).sort(), expected, `${method.toUpperCase()} ${path} documents its codes`)
    }
  }
  const create = doc.paths['/orders'].post
  t.same(create.requestBody.content['application/json'].example, {
    user_id: 1, order_id: 'ORD003', item_ids: [101, 102, 103], total_amount: 59.99
  }, 'the create body has an example')
  t.ok(create.responses['201'].headers?.location, 'the Location header is documented')
  t.ok(doc.paths['/orders'].get.responses['200'].headers?.link, 'the Link header is documented')
  for (const [path, method] of [['/orders/batch', 'post'], ['/orders/retry-failed', 'post'], ['/processing', 'get'], ['/processing/pause', 'post'],
    ['/orders/metrics/completions', 'get']] as const) {
    const operation = doc.paths[path][method]
    t.ok(operation.responses['200'].content['application/json'].schema.examples ?? operation.responses['200'].content['application/json'].example,
      `${method.toUpperCase()} ${path} has an example answer`)
  }
  t.same(doc.paths['/orders/batch'].post.requestBody.content['application/json'].example.orders.length, 2, 'the batch body has an example')
  t.match(doc.paths['/orders/batch'].post.description, /up to 1 MiB/, 'the batch body limit is documented')
})

t.test('listening on an address that is not loopback, no route documents 421', async (t) => {
  const app = await build(t, { PROCESSOR: 'off', HOST: '0.0.0.0' })
  const doc = (await app.inject({ url: '/docs/json' })).json()
  t.same(Object.keys(doc.paths['/orders'].get.responses).sort(), ROUTES['/orders']!.get)
  t.ok(doc.paths['/orders'].post.responses['403'], 'a route that changes something still documents 403')
})

t.test('GET /docs serves Swagger UI from the package, no CDN', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const res = await app.inject({ url: '/docs' })
  const page = res.statusCode === 302 ? await app.inject({ url: `/docs/${res.headers.location}` }) : res
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /text\/html/)
  t.notMatch(page.body, /https?:\/\/(cdn|unpkg)/)
})

/** Every operation of a document, with its method and path. */
function operations (doc: { paths: Record<string, Record<string, Record<string, unknown>>> }) {
  return Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, operation]) => ({ path, method, operation })))
}

t.test('every operation has a tag and a unique, stable operationId', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const doc = (await app.inject({ url: '/docs/json' })).json()
  const ids = operations(doc).map(({ path, method, operation }) => {
    t.ok((operation.tags as string[] | undefined)?.length, `${method} ${path} has a tag`)
    return operation.operationId
  })
  t.same([...ids].sort(), [...OPERATION_IDS].sort(), 'the operationIds clients are generated with, each once')
})

t.test('with API keys, exactly the key-protected operations carry the bearer scheme, their scope and 401; none without', async (t) => {
  const open = /^\/(health|ready|dashboard)/
  const keyed = await build(t, { PROCESSOR: 'off', API_KEY: 'a-long-enough-secret-key' })
  const doc = (await keyed.inject({ url: '/docs/json', headers: { authorization: 'Bearer a-long-enough-secret-key' } })).json()
  t.same(doc.components.securitySchemes.apiKey, { type: 'http', scheme: 'bearer', description: doc.components.securitySchemes.apiKey.description })
  t.match(doc.components.securitySchemes.apiKey.description, /scope read.*scope write/i)
  for (const { path, method, operation } of operations(doc)) {
    const scope = method === 'get' ? 'read' : 'write'
    if (open.test(path)) {
      t.equal(operation.security, undefined, `${method} ${path} is open`)
      t.notOk((operation.responses as Record<string, unknown>)['401'], `${method} ${path} has no 401`)
      continue
    }
    t.same(operation.security, [{ apiKey: [scope] }], `${method} ${path} needs a key of scope ${scope}`)
    t.ok((operation.responses as Record<string, unknown>)['401'], `${method} ${path} documents 401`)
    t.match(operation.description, `Needs an API key of scope ${scope}`)
    // 403: a read key (or another site's page) on an operation that changes something.
    t.equal('403' in (operation.responses as object), scope === 'write', `${method} ${path} documents 403 only if it needs write`)
  }
  const plain = (await build(t, { PROCESSOR: 'off' })).inject({ url: '/docs/json' })
  const withoutKeys = (await plain).json()
  t.equal(withoutKeys.components?.securitySchemes, undefined, 'without keys no scheme')
  t.notOk(operations(withoutKeys).some(({ operation }) => operation.security !== undefined || '401' in (operation.responses as object)), 'nor security or 401 anywhere')
  t.ok((await new Validator().validate(doc)).valid, 'the document with keys is valid OpenAPI')
})

t.test('the document says what the service does: the stream\'s errors are JSON, optional bodies are optional, pause and resume take none', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const doc = (await app.inject({ url: '/docs/json' })).json()
  const stream = doc.paths['/orders/stream'].get.responses
  t.same(Object.keys(stream['200'].content), ['text/event-stream'], 'the stream itself is an event stream')
  for (const code of ['400', '421', '503']) t.same(Object.keys(stream[code].content), ['application/json'], `its ${code} is JSON`)
  for (const path of ['/orders/retry-failed', '/processing/pause', '/processing/resume']) {
    const { requestBody } = doc.paths[path].post
    t.equal(requestBody.required, false, `${path}: the body may be left out`)
    t.equal(doc.paths[path].post['x-body-optional'], undefined, `${path}: no marker left in the document`)
  }
  for (const path of ['/processing/pause', '/processing/resume']) {
    t.same(doc.paths[path].post.requestBody.content['application/json'].schema.properties, {}, `${path}: a body has no field`)
    t.equal(doc.paths[path].post.requestBody.content['application/json'].schema.additionalProperties, false, `${path}: any field is refused`)
  }
  t.equal(doc.paths['/orders'].post.requestBody.required, true, 'a body that is needed stays required')
})
