import { connect } from 'node:net'
import type { FastifyInstance, InjectOptions } from 'fastify'
import t, { type Test } from 'tap'
import { loadConfig } from '../src/config.ts'
import { isLoopback } from '../src/http/cross-site.ts'
import { anOrder, build } from './helper.ts'

const HOST = '127.0.0.1:3000'

/** Every route that changes something, with a body it would accept. */
const CHANGES: InjectOptions[] = [
  { method: 'POST', url: '/orders', payload: anOrder('X2') },
  { method: 'POST', url: '/orders/X1/cancel' },
  { method: 'POST', url: '/orders/populate', payload: { total_entries: 1, batch_id: 'x' } },
  { method: 'POST', url: '/webhooks', payload: { url: 'http://127.0.0.1:9/hook' } },
  { method: 'DELETE', url: '/webhooks/ep_AAAAAAAAAAAAAAAAAAAAAA' },
  { method: 'POST', url: '/webhooks/ep_AAAAAAAAAAAAAAAAAAAAAA/test' },
  { method: 'POST', url: '/webhooks/ep_AAAAAAAAAAAAAAAAAAAAAA/redeliver' },
  { method: 'POST', url: '/orders/batch', payload: { orders: [anOrder('X3')] } },
  { method: 'POST', url: '/orders/X1/retry' },
  { method: 'POST', url: '/orders/retry-failed', payload: {} },
  { method: 'POST', url: '/processing/pause' },
  { method: 'POST', url: '/processing/resume' }
]

async function withOrder (t: Test, settings = {}): Promise<FastifyInstance> {
  const app = await build(t, { PENDING_DELAY_MS: '60000', PROCESSOR: 'off', ...settings })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('X1') })
  return app
}

const send = (app: FastifyInstance, request: InjectOptions, headers: Record<string, string>) =>
  app.inject({ ...request, headers: { host: HOST, ...headers } })

const FROM_ANOTHER_SITE: Record<string, Record<string, string>> = {
  'Origin and Sec-Fetch-Site: cross-site': { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
  'Sec-Fetch-Site: cross-site alone': { 'sec-fetch-site': 'cross-site' },
  'an Origin alone (a browser without Sec-Fetch-*)': { origin: 'http://evil.example' },
  'Origin: null (a sandboxed page, a file)': { origin: 'null', 'sec-fetch-site': 'cross-site' },
  'Sec-Fetch-Site: same-site with another Origin host': { origin: 'http://localhost:5173', 'sec-fetch-site': 'same-site' },
  'the same host on another port': { origin: 'http://127.0.0.1:8080', 'sec-fetch-site': 'same-site' },
  'the same host over another scheme, but cross-site': { origin: `https://${HOST}`, 'sec-fetch-site': 'cross-site' }
}

t.test('a request a browser sends from another site may not change anything: 403, nothing changed', async (t) => {
  const app = await withOrder(t)
  for (const [what, headers] of Object.entries(FROM_ANOTHER_SITE)) {
    for (const request of CHANGES) {
      const res = await send(app, request, headers)
      t.equal(res.statusCode, 403, `${request.method} ${request.url}, ${what}`)
      t.match(res.json(), { error: /ALLOWED_ORIGINS/ })
    }
  }
  t.equal((await app.inject({ url: '/orders/X1' })).json().status, 'Pending', 'the order is not cancelled')
  t.same((await app.store.stats()).counts.Pending, 1, 'nothing created')
  t.same((await app.inject({ url: '/webhooks' })).json(), { webhooks: [] }, 'no webhook endpoint registered')
  t.equal((await app.store.processingState()).state, 'running', 'processing not paused')
  for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
    const res = await send(app, { method, url: '/orders/X1' }, FROM_ANOTHER_SITE['an Origin alone (a browser without Sec-Fetch-*)']!)
    t.equal(res.statusCode, 403, `${method} is refused too`)
  }
  const read = await send(app, { url: '/orders/X1' }, FROM_ANOTHER_SITE['Origin and Sec-Fetch-Site: cross-site']!)
  t.equal(read.statusCode, 200, 'reading is not refused')
})

t.test('requests from the same origin, from no browser, or from an allowed origin change things as before', async (t) => {
  const allowed = 'https://Shop.Example:443, http://localhost:5173'
  const cases: Record<string, Record<string, string>> = {
    'no Origin, no Sec-Fetch-Site (curl, a server)': {},
    'the same origin': { origin: `http://${HOST}`, 'sec-fetch-site': 'same-origin' },
    'the same origin, in capitals': { origin: `HTTP://${HOST.toUpperCase()}` },
    'typed in the address bar': { 'sec-fetch-site': 'none' },
    'an allowed origin, cross-site': { origin: 'https://shop.example', 'sec-fetch-site': 'cross-site' },
    'an allowed origin, same-site': { origin: 'http://localhost:5173', 'sec-fetch-site': 'same-site' }
  }
  for (const [i, [what, headers]] of Object.entries(cases).entries()) {
    const app = await withOrder(t, { ALLOWED_ORIGINS: allowed })
    const [create, cancel, populate] = [
      await send(app, { method: 'POST', url: '/orders', payload: anOrder(`Y${i}`) }, headers),
      await send(app, CHANGES[1]!, headers),
      await send(app, CHANGES[2]!, headers)
    ]
    t.same([create.statusCode, cancel.statusCode, populate.statusCode], [201, 200, 201], what)
  }
})

t.test('listening on a loopback address, only its own host names are served: 421 otherwise', async (t) => {
  const app = await withOrder(t, { ALLOWED_HOSTS: 'orders.internal,[fd00::1]' })
  const served = ['localhost:3000', 'localhost', 'LocalHost:8080', '127.0.0.1', HOST, '[::1]:3000', '[::1]', 'orders.internal:443', 'ORDERS.internal', '[FD00::1]:80']
  for (const host of served) t.equal((await app.inject({ url: '/orders/X1', headers: { host } })).statusCode, 200, `Host: ${host}`)
  const refused = ['evil.example', 'evil.example:3000', 'localhost.evil.example', '127.0.0.1.nip.io:3000', '127.0.0.2:3000', 'orders.internal.evil.example', '[::2]:3000', 'localhost:3000:3000']
  for (const host of refused) {
    for (const request of [{ url: '/orders/X1' }, CHANGES[1]!]) {
      const res = await app.inject({ ...request, headers: { host } })
      t.equal(res.statusCode, 421, `${request.method ?? 'GET'} ${request.url}, Host: ${host}`)
      t.match(res.json(), { error: /ALLOWED_HOSTS/ })
    }
  }
  t.equal((await app.inject({ url: '/orders/X1' })).json().status, 'Pending', 'the order is not cancelled')
})

t.test('the Host rule applies only when listening on a loopback address', async (t) => {
  for (const [address, status] of [['0.0.0.0', 200], ['::', 200], ['10.1.2.3', 200], ['localhost', 421], ['::1', 421], ['127.0.0.2', 421]] as const) {
    const app = await build(t, { HOST: address, PROCESSOR: 'off' })
    t.equal((await app.inject({ url: '/health', headers: { host: 'evil.example:3000' } })).statusCode, status, `HOST=${address}`)
  }
  const app = await build(t, { HOST: '127.0.0.2', PROCESSOR: 'off' })
  t.equal((await app.inject({ url: '/health', headers: { host: '127.0.0.2:3000' } })).statusCode, 200, 'the address listened on is a name of the service')
  t.same(['127.0.0.1', '127.9.9.9', '::1', 'localhost', 'LOCALHOST', '0.0.0.0', '::', '192.168.1.1', 'example.com'].map(isLoopback),
    [true, true, true, true, true, false, false, false, false])
})

t.test('a request without Host (HTTP/1.0: no browser sends one) is served', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const response = await new Promise<string>((resolve) => {
    let text = ''
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /health HTTP/1.0\r\n\r\n'))
    socket.setEncoding('utf8').on('data', (chunk: string) => { text += chunk }).on('close', () => resolve(text))
  })
  t.match(response, /^HTTP\/1\.1 200 /)
})

t.test('ALLOWED_ORIGINS and ALLOWED_HOSTS: a bad value stops the start naming the variable', async (t) => {
  t.same(loadConfig({ ALLOWED_ORIGINS: ' https://a.example , http://[::1]:8080 ', ALLOWED_HOSTS: 'a.example, [::1]' }).ALLOWED_HOSTS, 'a.example, [::1]')
  for (const value of ['null', '*', 'https://a.example/', 'a.example', 'https://a.example/path', 'ftp://a.example', 'https://a.example,,']) {
    t.throws(() => loadConfig({ ALLOWED_ORIGINS: value }), { message: /^ALLOWED_ORIGINS must match pattern/ }, value)
  }
  for (const value of ['a.example:80', 'http://a.example', '*', 'a b']) {
    t.throws(() => loadConfig({ ALLOWED_HOSTS: value }), { message: /^ALLOWED_HOSTS must match pattern/ }, value)
  }
})
