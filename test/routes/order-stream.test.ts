import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { anOrder, build, waitFor } from '../helper.ts'

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
