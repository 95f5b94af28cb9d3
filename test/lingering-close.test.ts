import { once } from 'node:events'
import { request } from 'node:http'
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import { LINGER_MAX_BYTES, LINGER_MAX_MS } from '../src/http/lingering-close.ts'
import { build, type Settings } from './helper.ts'
import { ServerProcess } from './support/server-process.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

// 280 uploads of 5 or 50 MB (7.7 GB) take 20 to 60 s on a busy 2-core machine.
t.setTimeout(300_000)

const MB = 1024 * 1024
const JSON_BODY = { 'content-type': 'application/json' }
const KEY = 'a-long-enough-secret-key'

interface Upload { headers: Record<string, string>, chunked?: boolean }

const bodies = new Map<number, Buffer>()
/** A body of `size` bytes, made once: filling 50 MB took ~200 ms, 23 s of CPU over the 280 uploads. */
function bodyOf (size: number): Buffer {
  let body = bodies.get(size)
  if (body === undefined) bodies.set(size, body = Buffer.alloc(size, 'a'))
  return body
}

/**
 * What Node's http client gets for a body of `size` bytes written in one go (or in 64 KiB chunks
 * when chunked): `<status> <content type> <error>`, or the error it got instead of an answer.
 */
function upload (url: string, size: number, { headers, chunked = false }: Upload): Promise<string> {
  const body = bodyOf(size)
  return new Promise((resolve) => {
    const req = request(`${url}/orders`, { method: 'POST', headers: chunked ? headers : { 'content-length': String(size), ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => resolve(`${res.statusCode} ${res.headers['content-type']} ${JSON.parse(text).error as string}`))
    })
    // Once the answer was read, what happens to the rest of the upload does not matter.
    req.on('error', (err: Error & { code?: string }) => resolve(`no answer: ${err.code ?? err.message}`))
    if (!chunked) return req.end(body)
    for (let offset = 0; offset < size; offset += 64 * 1024) req.write(body.subarray(offset, offset + 64 * 1024))
    req.end()
  })
}

const REJECTIONS: Record<string, Upload & { status: number, error: RegExp, keyed?: true }> = {
  '413, Content-Length over the limit': { headers: JSON_BODY, status: 413, error: /too large/ },
  '413, a chunked body that passes the limit': { headers: JSON_BODY, chunked: true, status: 413, error: /too large/ },
  '415, a body that is not JSON': { headers: { 'content-type': 'text/plain' }, status: 415, error: /application\/json/ },
  '400, a Content-Length the HTTP parser refuses': { headers: { ...JSON_BODY, 'content-length': '5x' }, status: 400, error: /not a valid HTTP/ },
  '403, a browser request from another site': { headers: { ...JSON_BODY, origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' }, status: 403, error: /ALLOWED_ORIGINS/ },
  '421, a Host not of the service': { headers: { ...JSON_BODY, host: 'evil.example:3000' }, status: 421, error: /ALLOWED_HOSTS/ },
  '401, no API key (API_KEY set)': { headers: JSON_BODY, status: 401, error: /API key/, keyed: true }
}

// The service in a process of its own, as clients meet it: in one process with the client, the
// timing that loses the answer does not happen.
t.test('an early answer reaches Node\'s http client still sending 5 MB and 50 MB, 20 times out of 20', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const start = (env: Record<string, string> = {}) => ServerProcess.start({ DATABASE_URL: 'sqlite::memory:', PROCESSOR: 'off', ...env })
  const [open, keyed] = await Promise.all([start(), start({ API_KEY: KEY })])
  t.teardown(() => Promise.all([open.stop('SIGKILL'), keyed.stop('SIGKILL')]))
  for (const [what, { status, error, keyed: needsKey, ...upload_ }] of Object.entries(REJECTIONS)) {
    for (const size of [5 * MB, 50 * MB]) {
      const outcomes = new Map<string, number>()
      for (let i = 0; i < 20; i++) {
        const outcome = await upload((needsKey ? keyed : open).url, size, upload_)
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
      }
      const [[outcome, count]] = [...outcomes] as [[string, number]]
      t.ok(outcomes.size === 1 && count === 20, `${what}, ${size / MB} MB: ${JSON.stringify(Object.fromEntries(outcomes))}`)
      t.match(outcome, new RegExp(`^${status} application/json; charset=utf-8 .*${error.source}`))
    }
  }
})

/** A raw connection that keeps sending until the server closes it, not only its own side (FIN). */
const persistent = (port: number) => connect({ port, host: '127.0.0.1', allowHalfOpen: true })

/** A raw connection that sends `head`, then `chunk` every `everyMs` until the server closes it. */
async function trickle (port: number, head: string, chunk = 'a'.repeat(1024), everyMs = 20) {
  const socket = persistent(port)
  await once(socket, 'connect')
  const started = Date.now()
  socket.write(head)
  let answer = ''
  socket.setEncoding('utf8').on('data', (text: string) => { answer += text })
  const answered = once(socket, 'data')
  answered.catch(() => {}) // awaited only by some tests
  socket.on('error', () => {})
  const sending = setInterval(() => { if (socket.writable) socket.write(chunk) }, everyMs)
  const closed = new Promise((resolve) => socket.on('close', resolve)).then(() => {
    clearInterval(sending)
    return { answer, afterMs: Date.now() - started }
  })
  return { answered, closed }
}

async function listening (t: Test, settings: Settings): Promise<number> {
  const app = await build(t, { PROCESSOR: 'off', ...settings })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as { port: number }).port
}

const hugeUpload = `POST /orders HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${1024 * MB}\r\n\r\n`
/** Early answers to requests whose body keeps coming: from Fastify, and from Node's HTTP parser. */
const EARLY: Record<string, [string, RegExp]> = {
  '413 (too large)': [hugeUpload, /^HTTP\/1\.1 413 .*connection: close.*Request body is too large/is],
  '400 (a header the HTTP parser refuses)': [hugeUpload.replace(/content-length: \d+/, 'content-length: 1x'), /^HTTP\/1\.1 400 .*connection: close.*not a valid HTTP/is]
}

for (const [what, [head, answered]] of Object.entries(EARLY)) {
  t.test(`a client sending a huge body slowly after an early ${what} is still cut off by REQUEST_TIMEOUT_MS`, async (t) => {
    const port = await listening(t, { REQUEST_TIMEOUT_MS: '1000' })
    const { answer, afterMs } = await (await trickle(port, head)).closed
    t.match(answer, answered, 'the answer came first')
    t.ok(afterMs >= 1000 && afterMs < LINGER_MAX_MS, `closed by the request timeout, after ${afterMs} ms`)
  })

  t.test(`a client still sending ${LINGER_MAX_MS / 1000} s after an early ${what} is cut off then`, async (t) => {
    const port = await listening(t, {})
    const { answer, afterMs } = await (await trickle(port, head)).closed
    t.match(answer, answered)
    t.ok(afterMs >= LINGER_MAX_MS, `closed after ${afterMs} ms`)
  })
}

t.test('a client sending an acceptable body slowly gets a 408 after REQUEST_TIMEOUT_MS, as before', async (t) => {
  const port = await listening(t, { REQUEST_TIMEOUT_MS: '1000' })
  const head = 'POST /orders HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 900000\r\n\r\n'
  const { answer, afterMs } = await (await trickle(port, head, ' '.repeat(1024))).closed
  t.match(answer, /^HTTP\/1\.1 408 .*REQUEST_TIMEOUT_MS/s)
  t.ok(afterMs >= 1000, `after ${afterMs} ms`)
})

t.test('a client sending fast after its early answer is cut off after LINGER_MAX_BYTES', async (t) => {
  const port = await listening(t, {})
  const socket = persistent(port)
  await once(socket, 'connect')
  let answer = ''
  socket.setEncoding('utf8').on('data', (text: string) => { answer += text })
  socket.on('error', () => {})
  socket.write(hugeUpload)
  const chunk = Buffer.alloc(MB)
  let accepted = 0
  // Written one MiB at a time until the service closes the connection.
  while (accepted < 512 * MB && await new Promise<boolean>((resolve) => socket.write(chunk, (err) => resolve(!err)))) accepted += MB
  socket.destroy()
  t.match(answer, /^HTTP\/1\.1 413 /, 'the answer was read')
  t.ok(accepted >= LINGER_MAX_BYTES && accepted < 512 * MB, `the connection was closed after ${accepted / MB} MiB`)
})

t.test('closing the service does not wait for lingering connections', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const client = await trickle((app.server.address() as { port: number }).port, hugeUpload)
  await client.answered
  const started = Date.now()
  await app.close()
  const { answer } = await client.closed
  t.match(answer, /^HTTP\/1\.1 413 /)
  t.ok(Date.now() - started < LINGER_MAX_MS, `closed in ${Date.now() - started} ms`)
})
