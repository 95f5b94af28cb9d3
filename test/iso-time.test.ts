import fc from 'fast-check'
import t from 'tap'
import { isoTime } from '../src/iso-time.ts'

t.test('isoTime writes every time as Date#toISOString does', async (t) => {
  const edges = [0, 1, 9, 10, 99, 100, 999, 1000, -1, -999, -1000, -1001, 1_700_000_000_000, 1_700_000_000_999, 2 ** 31 * 1000 + 7, 253402300799999]
  for (const ms of edges) t.equal(isoTime(ms), new Date(ms).toISOString(), String(ms))
  // Years 1 to 9999, and times a few seconds apart that share cache slots.
  fc.assert(fc.property(fc.integer({ min: -62135596800000, max: 253402300799999 }), (ms) => isoTime(ms) === new Date(ms).toISOString()))
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 200_000 }), { maxLength: 50 }), (offsets) =>
    offsets.every((offset) => isoTime(1_700_000_000_000 + offset) === new Date(1_700_000_000_000 + offset).toISOString())))
})
