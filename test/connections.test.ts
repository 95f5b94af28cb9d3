import { once } from 'node:events'
import { get } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import t, { type Test } from 'tap'
import { anOrder, build, type Settings } from './helper.ts'
import { createDatabase, SKIP_POSTGRES } from './support/pg-database.ts'

async function listening (t: Test, settings: Settings): Promise<{ app: FastifyInstance, port: number }> {
  const app = await build(t, { PROCESSOR: 'off', ...settings })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return { app, port: address.port }
}

/** Opens a raw connection, sends `bytes` and collects what comes back until the server closes it. */
async function exchange (port: number, bytes: string, deadlineMs = 10_000): Promise<{ response: string, afterMs: number }> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => { if (bytes) socket.write(bytes) })
    let response = ''
    const deadline = setTimeout(() => { socket.destroy(); reject(new Error(`still open after ${deadlineMs} ms`)) }, deadlineMs)
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { response += chunk })
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(deadline); resolve({ response, afterMs: Date.now() - started }) })
  })
}

function parse (response: string): { status: number, contentType: string | undefined, body: unknown } {
  const [head = '', body = ''] = response.split('\r\n\r\n')
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1])
  const contentType = /^content-type: (.*)$/im.exec(head)?.[1]
  return { status, contentType, body: JSON.parse(body) }
}

t.test('bytes that are not HTTP get a 400 JSON error, then the connection closes', async (t) => {
  const { port } = await listening(t, {})
  const { status, contentType, body } = parse((await exchange(port, 'HELLO THERE\r\n\r\n')).response)
  t.equal(status, 400)
  t.match(contentType, /^application\/json/)
  t.same(body, { error: 'Bad Request: not a valid HTTP/1.1 request' })
})

t.test('a request with two Host headers is a 400 JSON error, whichever comes first', async (t) => {
  // The overload guard, which answers first, off: this machine's load is not what this is about.
  const { port } = await listening(t, { MAX_EVENT_LOOP_DELAY_MS: '0' })
  for (const hosts of [['localhost', 'evil.example'], ['evil.example', 'localhost'], ['localhost', 'localhost']]) {
    const head = hosts.map((host) => `Host: ${host}\r\n`).join('')
    const { status, contentType, body } = parse((await exchange(port, `GET /orders HTTP/1.1\r\n${head}connection: close\r\n\r\n`)).response)
    t.equal(status, 400, hosts.join(', '))
    t.match(contentType, /^application\/json/)
    t.same(body, { error: 'Bad Request: more than one Host header' })
  }
  const one = parse((await exchange(port, 'GET /orders HTTP/1.1\r\nHost: localhost\r\nconnection: close\r\n\r\n')).response)
  t.equal(one.status, 200, 'one Host is served')
})

t.test('bad bytes on an open event stream end it without writing an error into it', async (t) => {
  const { port } = await listening(t, {})
  const received = await new Promise<string>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /orders/stream HTTP/1.1\r\nhost: localhost\r\n\r\n'))
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      text += chunk
      if (chunk.includes(': connected')) socket.write('HELLO THERE\r\n\r\n')
    })
    socket.on('error', () => {})
    socket.on('close', () => resolve(text))
  })
  t.match(received, /^HTTP\/1\.1 200 OK/)
  t.notMatch(received, /HTTP\/1\.1 400/, 'no second status line inside the stream')
})

t.test('headers over 16 KiB get a 431 JSON error', async (t) => {
  const { port } = await listening(t, {})
  const request = `GET /orders HTTP/1.1\r\nhost: localhost\r\nx-padding: ${'a'.repeat(20 * 1024)}\r\n\r\n`
  const { status, body } = parse((await exchange(port, request)).response)
  t.equal(status, 431)
  t.same(body, { error: 'Request Header Fields Too Large: at most 16 KiB of headers' })
})

const stalled = {
  'headers that stop': 'POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: appl',
  'a body that stops': 'POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"user_id": 1,'
}
for (const [what, request] of Object.entries(stalled)) {
  t.test(`${what} arriving: a 408 JSON error after REQUEST_TIMEOUT_MS, nothing created`, async (t) => {
    const { app, port } = await listening(t, { REQUEST_TIMEOUT_MS: '1000' })
    const { response, afterMs } = await exchange(port, request)
    const { status, body } = parse(response)
    t.equal(status, 408)
    t.same(body, { error: 'Request Timeout: the whole request must arrive within REQUEST_TIMEOUT_MS' })
    t.ok(afterMs >= 1000, `answered after the timeout (${afterMs} ms)`)
    t.equal((await app.store.stats()).counts.Pending, 0, 'nothing created')
  })
}

t.test('a connection that stays silent is closed after CONNECTION_TIMEOUT_MS', async (t) => {
  const { port } = await listening(t, { CONNECTION_TIMEOUT_MS: '1000' })
  const { response, afterMs } = await exchange(port, '')
  t.equal(response, '', 'nothing to answer: no request was sent')
  t.ok(afterMs >= 1000, `closed after the timeout (${afterMs} ms)`)
})

t.test('a request still being handled outlives CONNECTION_TIMEOUT_MS', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  const blocker = new pg.Client({ connectionString: database.url })
  t.teardown(async () => { await blocker.end(); await database.drop() })
  const { app, port } = await listening(t, { DATABASE_URL: database.url, CONNECTION_TIMEOUT_MS: '1000' })
  // Another transaction inserts the same order id first: the service's insert waits for it to end.
  await blocker.connect()
  await blocker.query('BEGIN')
  await blocker.query(`INSERT INTO orders (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
    VALUES ('slow', 1, '[1]', 100, 'Pending', 0, 0, 0)`)
  // Listened for on the socket: a listener on the server would itself change what Node does on a timeout.
  const silentTooLong = once(app.server, 'connection').then(([socket]) => once(socket as Socket, 'timeout'))
  const answer = fetch(`http://127.0.0.1:${port}/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(anOrder('slow'))
  })
  await silentTooLong
  await blocker.query('ROLLBACK')
  const res = await answer
  t.equal(res.status, 201, 'answered, on the connection that was silent for longer than the timeout')
})

t.test('an idle event stream outlives CONNECTION_TIMEOUT_MS: heartbeats keep it open', async (t) => {
  const { port } = await listening(t, { CONNECTION_TIMEOUT_MS: '1000' })
  const started = Date.now()
  const heartbeats = await new Promise<number>((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/orders/stream' }, (res) => {
      let count = 0
      let received = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        received += chunk
        count = received.split(': heartbeat').length - 1
        if (count >= 4) { res.destroy(); resolve(count) }
      })
      res.on('close', () => { reject(new Error(`stream closed after ${count} heartbeats`)) })
    }).on('error', reject)
  })
  t.ok(Date.now() - started > 1500, `open for longer than the connection timeout, ${heartbeats} heartbeats received`)
})
