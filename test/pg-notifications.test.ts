import t from 'tap'
import type { OrderChange } from '../src/store/order-store.ts'
import {
  decodeAvailableAt, decodeChanges, decodeProcessingState, encodeChanges, encodeProcessingState, MAX_PAYLOAD_BYTES
} from '../src/store/pg/notifications.ts'

const T0 = 1_700_000_000_000

t.test('changes are packed into payloads PostgreSQL accepts, each as full as it can be, and read back unchanged', async (t) => {
  // Multi-byte characters check that bytes are counted, not characters.
  for (const [idLength, filler] of [[1, 'x'], [64, 'x'], [64, 'é'], [500, 'x']] as const) {
    const changes: OrderChange[] = Array.from({ length: 700 }, (_, i) => ({
      order_id: `${i}-`.padEnd(idLength, filler),
      status: i % 2 ? 'Processing' : 'Completed',
      at: T0 + i,
      attempts: i % 4,
      created_at: T0,
      processing_started_at: i % 3 ? T0 + 1 : null
    }))
    const payloads = encodeChanges(changes)
    const sizes = payloads.map((payload) => Buffer.byteLength(payload))
    t.ok(sizes.every((size) => size < MAX_PAYLOAD_BYTES), `ids of ${idLength} × "${filler}": ${payloads.length} payloads, at most ${Math.max(...sizes)} bytes`)
    const longestRow = Math.max(...changes.map((c) => Buffer.byteLength(JSON.stringify(encodeChanges([c])))))
    t.ok(sizes.slice(0, -1).every((size) => size > MAX_PAYLOAD_BYTES - longestRow), 'no payload but the last has room for another change')
    t.same(payloads.flatMap(decodeChanges), changes, 'read back in order, unchanged')
  }
  t.same(encodeChanges([]), [])
})

t.test('payloads this service did not send are refused', async (t) => {
  for (const payload of ['not json', '{}', 'null', '[1]', '[["A", "Shipped", 1, 0, 1, null]]', '[["A", "Pending", 1.5, 0, 1, null]]', '[["A", "Pending", 1, -1, 1, null]]']) {
    t.throws(() => decodeChanges(payload), `${payload} refused`)
  }
  for (const payload of ['', 'soon', '1.5', '1e400']) t.throws(() => decodeAvailableAt(payload), `"${payload}" refused`)
  t.equal(decodeAvailableAt(String(T0)), T0)
  for (const payload of ['paused', 'null', '{}', '{"state": "stopped", "since": 1}', '{"state": "paused", "since": 1.5}', '{"state": "paused", "since": 1, "by": "x"}']) {
    t.throws(() => decodeProcessingState(payload), `${payload} refused`)
  }
})

t.test('a processing state is read back unchanged', async (t) => {
  for (const state of [{ state: 'paused', since: T0 }, { state: 'running', since: T0 + 1 }] as const) {
    t.same(decodeProcessingState(encodeProcessingState(state)), state)
  }
})
