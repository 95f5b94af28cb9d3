import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KeyRing, parseKeyFile } from '../src/http/api-key.ts'
import { startFailure } from '../src/config.ts'
import { anOrder, build, tempDir } from './helper.ts'

const KEY = 'a-long-enough-secret-key'

t.test('with API_KEY set, every route but /health, /ready, /docs and the dashboard page needs the key', async (t) => {
  const app = await build(t, { API_KEY: KEY, PROCESSOR: 'off' })
  for (const url of ['/health', '/ready', '/docs/json', '/docs', '/dashboard', '/dashboard/app.js', '/dashboard/chart.js']) {
    t.ok((await app.inject({ url })).statusCode < 400, `${url} is open`)
  }
  const requests = [
    { method: 'POST' as const, url: '/orders', payload: anOrder('K1') },
    { method: 'GET' as const, url: '/orders' },
    { method: 'GET' as const, url: '/orders/K1' },
    { method: 'GET' as const, url: '/orders/metrics' },
    { method: 'GET' as const, url: '/orders/stream' },
    { method: 'GET' as const, url: '/metrics' },
    { method: 'GET' as const, url: '/dashboards' },
    { method: 'POST' as const, url: '/orders/populate', payload: { total_entries: 1 } },
    { method: 'POST' as const, url: '/orders/K1/cancel' },
    { method: 'POST' as const, url: '/orders/K1/retry' },
    { method: 'POST' as const, url: '/orders/retry-failed', payload: {} },
    { method: 'POST' as const, url: '/orders/batch', payload: { orders: [anOrder('K2')] } },
    { method: 'GET' as const, url: '/processing' },
    { method: 'POST' as const, url: '/processing/pause' },
    { method: 'POST' as const, url: '/processing/resume' },
    { method: 'GET' as const, url: '/healthz' }
  ]
  for (const request of requests) {
    for (const authorization of [undefined, 'Bearer wrong', `Basic ${KEY}`, 'Bearer ', KEY]) {
      const res = await app.inject({ ...request, headers: authorization === undefined ? {} : { authorization } })
      t.equal(res.statusCode, 401, `${request.method} ${request.url} with ${authorization}`)
      t.match(res.json(), { error: /API key/ })
    }
  }
  t.equal((await app.store.stats()).counts.Pending, 0, 'nothing was created')
  t.equal((await app.store.processingState()).state, 'running', 'nor paused')
  const ok = await app.inject({ method: 'POST', url: '/orders', payload: anOrder('K1'), headers: { authorization: `Bearer ${KEY}` } })
  t.equal(ok.statusCode, 201)
})

t.test('without API_KEY nothing needs a key', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  t.equal((await app.inject({ url: '/orders' })).statusCode, 200)
})

t.test('KeyRing: a key by its name and scope; the Bearer scheme name in any case (RFC 9110)', async (t) => {
  const keys = new KeyRing([{ name: 'app', scope: 'write', key: KEY }, { name: 'scraper', scope: 'read', key: `${KEY}-read` }])
  t.same(keys.find(`Bearer ${KEY}`), { name: 'app', scope: 'write' })
  t.same(keys.find(`bearer ${KEY}`), { name: 'app', scope: 'write' })
  t.same(keys.find(`BEARER ${KEY}-read`), { name: 'scraper', scope: 'read' })
  for (const header of [`Bearer ${KEY}x`, undefined, 'Bearer ', `Basic ${KEY}`, KEY]) t.equal(keys.find(header), null, `${header}`)
  t.equal(new KeyRing([]).find(`Bearer ${KEY}`), null)
})

t.test('a lower-case bearer is accepted by the service', async (t) => {
  const app = await build(t, { API_KEY: KEY, PROCESSOR: 'off' })
  t.equal((await app.inject({ url: '/orders', headers: { authorization: `bearer ${KEY}` } })).statusCode, 200)
})

t.test('parseKeyFile: names, scopes and keys; comments and blank lines skipped', async (t) => {
  t.same(parseKeyFile(`# keys\n\nshop  write ${KEY}   # the shop\n\tgrafana\tread\t${KEY}-2\r\n`), [
    { name: 'shop', scope: 'write', key: KEY },
    { name: 'grafana', scope: 'read', key: `${KEY}-2` }
  ])
  const errors: Record<string, [string, RegExp]> = {
    'a key shorter than 16 characters': [`a write ${KEY}\nb read short-key-15ch`, /^line 2: the key of "b" is shorter than 16 characters$/],
    'an unknown scope': [`# c\na admin ${KEY}`, /^line 2: unknown scope "admin" \(read or write\)$/],
    'a line of two fields': [`a ${KEY}`, /^line 1: expected "name scope key", got 2 fields$/],
    'a line of four fields': [`a read ${KEY} extra`, /^line 1: expected "name scope key", got 4 fields$/],
    'a name used twice': [`a read ${KEY}\n\na write ${KEY}-2`, /^line 3: the name "a" is already used on line 1$/],
    'a key used twice': [`a read ${KEY}\nb write ${KEY}`, /^line 2: the key of "b" is already the key on line 1$/]
  }
  for (const [what, [text, message]] of Object.entries(errors)) {
    t.throws(() => parseKeyFile(text), { message }, what)
    t.notMatch((() => { try { parseKeyFile(text) } catch (err) { return (err as Error).message } })(), KEY, `${what}: the key is not in the message`)
  }
})

t.test('a bad API_KEYS_FILE stops the start with one line naming the file and its line', async (t) => {
  const file = join(tempDir(t), 'keys')
  writeFileSync(file, `shop write ${KEY}\nscraper reed ${KEY}-2\n`)
  const err = await build(t, { API_KEYS_FILE: file, PROCESSOR: 'off' }).then(() => null, (err: unknown) => err)
  t.equal(startFailure(err), `Invalid configuration: API_KEYS_FILE ${file} line 2: unknown scope "reed" (read or write)`)
  const missing = await build(t, { API_KEYS_FILE: `${file}-none`, PROCESSOR: 'off' }).then(() => null, (err: unknown) => err)
  t.equal(startFailure(missing), `Invalid configuration: API_KEYS_FILE ${file}-none: ENOENT`)
})

t.test('scopes: a read key reads (GET, the event stream, /metrics), a write key does everything, API_KEY is a write key', async (t) => {
  const file = join(tempDir(t), 'keys')
  writeFileSync(file, `shop write ${KEY}-write\nscraper read ${KEY}-read\n`)
  const app = await build(t, { API_KEYS_FILE: file, API_KEY: KEY, PROCESSOR: 'off' })
  const as = (key: string) => ({ authorization: `Bearer ${key}` })
  for (const key of [KEY, `${KEY}-write`]) {
    t.equal((await app.inject({ method: 'POST', url: '/orders', payload: anOrder(`W-${key.length}`), headers: as(key) })).statusCode, 201, 'a write key creates')
  }
  for (const url of ['/orders', '/orders/W-24', '/orders/metrics', '/metrics', '/processing', '/webhooks', '/orders/metrics/completions']) {
    t.equal((await app.inject({ url, headers: as(`${KEY}-read`) })).statusCode, 200, `a read key reads ${url}`)
  }
  const stream = await app.inject({ url: '/orders/stream', headers: as(`${KEY}-read`), payloadAsStream: true })
  t.equal(stream.statusCode, 200, 'a read key opens the event stream')
  stream.stream().destroy()
  for (const request of [
    { method: 'POST' as const, url: '/orders', payload: anOrder('R1') },
    { method: 'POST' as const, url: '/orders/W-24/cancel' },
    { method: 'POST' as const, url: '/processing/pause' },
    { method: 'POST' as const, url: '/orders/populate', payload: { total_entries: 1 } },
    { method: 'DELETE' as const, url: '/webhooks/1' }
  ]) {
    const res = await app.inject({ ...request, headers: as(`${KEY}-read`) })
    t.equal(res.statusCode, 403, `a read key may not ${request.method} ${request.url}`)
    t.match(res.json().error, /the API key "scraper" has scope read; .* needs scope write/)
  }
  t.equal((await app.store.get('R1')), undefined, 'nothing was created')
  t.equal((await app.store.get('W-24'))?.status, 'Pending', 'nor cancelled')
  t.equal((await app.store.processingState()).state, 'running', 'nor paused')
})
