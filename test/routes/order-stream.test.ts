import { get, type IncomingMessage } from 'node:http'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { anOrder, build, testConfig, waitFor } from '../helper.ts'

interface StatusEvent { order_id: string, status: string, at: string, attempts: number }

/** Reads an SSE stream over real HTTP, collecting its status events; the app listens on first use. */
async function subscribe (app: FastifyInstance, query = '') {
  const address = app.server.listening ? app.listeningOrigin : await app.listen({ port: 0, host: '127.0.0.1' })
  const leave = new AbortController()
  const res = await fetch(`${address}/orders/stream${query}`, { signal: leave.signal })
  const events: StatusEvent[] = []
  let text = ''
  const done = (async () => {
    const decoder = new TextDecoder()
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true })
      let end: number
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end)
        text = text.slice(end + 2)
        const data = /^event: status\ndata: (.*)$/s.exec(block)?.[1]
        if (data) events.push(JSON.parse(data))
      }
    }
  })().catch((err: Error) => { if (err.name !== 'AbortError') throw err })
  return { res, events, done, leave: () => leave.abort() }
}

t.test('GET /orders/stream delivers every transition of a populated batch, in order', async (t) => {
  const app = await build(t, { PROCESSING_TIME_MS: '1' })
  const { res, events, done } = await subscribe(app)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/event-stream/)
  const total = 300
  await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: total, batch_id: 'sse' } })
  await waitFor(() => events.filter((e) => e.status === 'Completed').length === total, 'every completion to be streamed')
  const byOrder = new Map<string, string[]>()
  for (const e of events) byOrder.set(e.order_id, [...(byOrder.get(e.order_id) ?? []), e.status])
  t.equal(byOrder.size, total)
  t.ok([...byOrder.values()].every((s) => s.join() === 'Pending,Processing,Completed'), 'each order: Pending, Processing, Completed')
  t.match(events[0]!.at, /Z$/)
  await app.close()
  await done
  t.pass('the stream ends cleanly when the service closes')
})

t.test('GET /orders/stream?order_id= follows one order', async (t) => {
  const app = await build(t, { PENDING_DELAY_MS: '30' })
  const { events } = await subscribe(app, '?order_id=S2')
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('S1') })
  // S1 goes through all its states unheard; then processing is paused, so that S2 is cancelled
  // while Pending however slow the machine (a claim within 30 ms of its create was seen in CI).
  await waitFor(async () => (await app.inject({ url: '/orders/S1' })).json().status === 'Completed', 'S1 to complete')
  t.equal((await app.inject({ method: 'POST', url: '/processing/pause' })).statusCode, 200)
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('S2') })
  await app.inject({ method: 'POST', url: '/orders/S2/cancel' })
  await waitFor(() => events.length === 2, 'two events')
  t.same(events.map((e) => `${e.order_id}:${e.status}`), ['S2:Pending', 'S2:Cancelled'])
})

t.test('streams open at once each get their own events, and one closing leaves the others running', async (t) => {
  const app = await build(t, { PENDING_DELAY_MS: '60000', PROCESSOR: 'off' })
  const all = await subscribe(app)
  const one = await subscribe(app, '?order_id=M2')
  const leaving = await subscribe(app)
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('M1') })
  await waitFor(() => leaving.events.length === 1, 'the first event everywhere')
  leaving.leave()
  await leaving.done
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('M2') })
  await waitFor(() => all.events.length === 2 && one.events.length === 1, 'the second event')
  t.same(all.events.map((e) => e.order_id), ['M1', 'M2'])
  t.same(one.events.map((e) => e.order_id), ['M2'])
  t.same(leaving.events.map((e) => e.order_id), ['M1'])
})

t.test('GET /orders/stream refuses a malformed order_id', async (t) => {
  const app = await build(t)
  const res = await app.inject({ url: '/orders/stream?order_id=bad%20id' })
  t.equal(res.statusCode, 400)
  t.match(res.json(), { error: /order_id/ })
})

t.test('MAX_STREAMS streams are held at once; one more is a 503 until one closes', async (t) => {
  const app = await build(t, { MAX_STREAMS: '3', PROCESSOR: 'off' })
  const open = [await subscribe(app), await subscribe(app, '?order_id=C1')]
  // This one is closed by its client, at once (fetch keeps an aborted connection a few seconds).
  const leaving = await new Promise<IncomingMessage>((resolve) => get(`${app.listeningOrigin}/orders/stream?order_id=C2`, resolve))
  t.same([...open.map((s) => s.res.status), leaving.statusCode], [200, 200, 200])
  const refused = await fetch(`${app.listeningOrigin}/orders/stream?order_id=C3`)
  t.equal(refused.status, 503)
  t.ok(Number(refused.headers.get('retry-after')) > 0, 'with Retry-After')
  t.match(await refused.json(), { error: /MAX_STREAMS/ })
  leaving.destroy()
  const again = await waitFor(async () => {
    const s = await subscribe(app)
    if (s.res.status === 200) return s
    await s.done
    return undefined
  }, 'a stream to be accepted once one has closed')
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('C1') })
  await waitFor(() => again.events.length === 1 && open.every((s) => s.events.length === 1), 'the event on every stream that follows it')
})

t.test('MAX_STREAMS defaults to 1000', async (t) => {
  t.equal(testConfig().MAX_STREAMS, 1000)
})

t.test('HEAD /orders/stream is a 405 naming GET, not a connection held open', async (t) => {
  const app = await build(t)
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  for (const path of ['/orders/stream', '/orders/stream/', '/orders/stream?order_id=H1']) {
    const res = await fetch(`${address}${path}`, { method: 'HEAD', signal: AbortSignal.timeout(5000) })
    t.equal(res.status, 405, path)
    t.equal(res.headers.get('allow'), 'GET')
    t.match(res.headers.get('content-type'), /^application\/json/)
  }
  const injected = await app.inject({ method: 'HEAD', url: '/orders/stream' })
  t.equal(injected.statusCode, 405)
})

t.test('many streams share one heartbeat timer', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const timers = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
  await subscribe(app)
  const before = timers()
  const streams = await Promise.all(Array.from({ length: 50 }, (_, i) => subscribe(app, i % 2 ? `?order_id=T${i}` : '')))
  t.same(new Set(streams.map((s) => s.res.status)), new Set([200]))
  t.ok(timers() <= before + 1, `50 more streams add at most one timer (${timers() - before})`)
})

t.test('followers of one order among many followers of others get its events, in commit order', async (t) => {
  const app = await build(t, { PENDING_DELAY_MS: '60000', PROCESSOR: 'off' })
  const others = await Promise.all(Array.from({ length: 40 }, (_, i) => subscribe(app, `?order_id=other-${i}`)))
  const [first, second] = [await subscribe(app, '?order_id=F1'), await subscribe(app, '?order_id=F1')]
  const all = await subscribe(app)
  const ids = Array.from({ length: 30 }, (_, i) => `F${i}`)
  // One batch of creates, committed together, then the cancel of F1 in a later one.
  await Promise.all(ids.map((id) => app.inject({ method: 'POST', url: '/orders', payload: anOrder(id) })))
  await app.inject({ method: 'POST', url: '/orders/F1/cancel' })
  await waitFor(() => all.events.length === ids.length + 1, 'every event on the stream of every order')
  await waitFor(() => second.events.length === 2, 'both events of F1')
  for (const follower of [first, second]) t.same(follower.events.map((e) => e.status), ['Pending', 'Cancelled'])
  t.same(all.events.slice(0, ids.length).map((e) => e.order_id).sort(), [...ids].sort())
  t.match(all.events.at(-1), { order_id: 'F1', status: 'Cancelled' }, 'the cancel comes last')
  t.ok(others.every((s) => s.events.length === 0), 'followers of other orders get nothing')
})
