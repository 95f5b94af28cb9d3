import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { get as httpGet, request as httpRequest, type IncomingMessage } from 'node:http'
import { once } from 'node:events'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { ServerProcess } from './support/server-process.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

const OLD = 'the-old-key-of-the-shop'
const NEW = 'the-new-key-of-the-shop'

async function started (t: Test, file: string): Promise<ServerProcess> {
  // The compiled build, as npm start runs it (npm run build first).
  const server = await ServerProcess.start({ API_KEYS_FILE: file, DATABASE_URL: 'sqlite::memory:', PROCESSOR: 'off', LOG_LEVEL: 'info', ACCESS_LOG: 'true' }, 'dist/src/server.js')
  t.teardown(async () => { server.child.kill('SIGKILL'); await server.exited })
  return server
}

/**
 * The status of GET /orders with a key, on a connection of its own: a refusal closes its
 * connection (lingering close), which a pooled client could pick again.
 */
async function statusWith (server: ServerProcess, key: string, path = '/orders'): Promise<number> {
  const req = httpGet(`${server.url}${path}`, { agent: false, headers: { authorization: `Bearer ${key}` } })
  const [res] = await once(req, 'response') as [IncomingMessage]
  res.resume()
  return res.statusCode as number
}

t.test('SIGHUP reads the key file again: the new key works and the old one is refused, no restart', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  // The file is a link into another directory, whose changes the service does not watch: only the signal reloads it.
  const dir = tempDir(t)
  mkdirSync(join(dir, 'elsewhere'))
  const target = join(dir, 'elsewhere', 'keys')
  writeFileSync(target, `shop write ${OLD}\n`)
  symlinkSync(target, join(dir, 'keys'))
  const server = await started(t, join(dir, 'keys'))
  t.equal(await statusWith(server, OLD), 200)
  t.equal(await statusWith(server, NEW), 401)
  writeFileSync(target, `shop write ${NEW}\n`)
  server.child.kill('SIGHUP')
  await waitFor(async () => await statusWith(server, NEW) === 200, 'the new key to be read')
  t.equal(await statusWith(server, OLD), 401, 'the old key is gone')
  t.equal(server.child.exitCode, null, 'the process lives on')
  // Its log lines come through a pipe, some time after the answers.
  await waitFor(() => /"msg":"API keys reloaded from [^"]*keys"/.test(server.output), 'the reload to be logged')
  t.match(server.output, /"apiKeyName":"shop"/, 'the access log names the key')
  t.notMatch(server.output, OLD, 'and never shows it')
  t.notMatch(server.output, NEW)
})

t.test('a change of the file is seen by itself; a bad one keeps the keys in use and logs one line', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'keys')
  writeFileSync(file, `shop write ${OLD}\n`)
  const server = await started(t, file)
  // Both for a while, then only the new one: rotation with no downtime.
  writeFileSync(file, `shop write ${OLD}\nshop-next write ${NEW}\n`)
  await waitFor(async () => await statusWith(server, NEW) === 200, 'the added key to be read')
  t.equal(await statusWith(server, OLD), 200, 'the old key still works meanwhile')
  writeFileSync(file, `shop-next write ${NEW}\n`)
  await waitFor(async () => await statusWith(server, OLD) === 401, 'the removed key to be refused')

  writeFileSync(file, `shop-next write ${NEW}\nbroken\n`)
  await waitFor(() => server.output.includes('API keys not reloaded'), 'the bad reload to be logged')
  t.equal(await statusWith(server, NEW), 200, 'the keys in use stay')
  const failures = server.output.split('\n').filter((line) => line.includes('API keys not reloaded'))
  t.equal(failures.length, 1, 'one line')
  t.match(failures[0], `${file} line 2: expected \\"name scope key\\", got 1 field`)
})

t.test('a request under way is not refused when its key is removed before it is done', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'keys')
  writeFileSync(file, `shop write ${OLD}\n`)
  const server = await started(t, file)
  const body = JSON.stringify(anOrder('in-flight'))
  const { port } = new URL(server.url)
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/orders',
    headers: { authorization: `Bearer ${OLD}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
  })
  const answered = once(req, 'response')
  // Half the body: the request has begun (and was authorized) but is not done.
  req.write(body.slice(0, 10))
  writeFileSync(file, `shop-next write ${NEW}\n`)
  await waitFor(async () => await statusWith(server, OLD) === 401, 'the key to be removed')
  req.end(body.slice(10))
  const [res] = await answered as [IncomingMessage]
  t.equal(res.statusCode, 201, 'the request that began with the key is done')
  res.resume()
  t.equal(await statusWith(server, NEW, '/orders/in-flight'), 200, 'and its order exists')
})
