import t from 'tap'
import { HISTORY_SECONDS, PerSecondHistory } from '../src/per-second-history.ts'

const T0 = 1_700_000_000_000 // a whole second

t.test('counts events per second over the last five minutes, oldest first, the current second last', async (t) => {
  const history = new PerSecondHistory()
  for (const at of [T0, T0 + 999, T0 + 1000, T0 + 5_500, T0 + 5_501, T0 + 5_999]) history.add(at)
  const { from, counts } = history.window(T0 + 5_800)
  t.equal(counts.length, HISTORY_SECONDS)
  t.equal(from, T0 + 6_000 - HISTORY_SECONDS * 1000, 'the window ends with the second of now')
  t.same(counts.slice(-6), [2, 1, 0, 0, 0, 3])
  t.equal(counts.reduce((sum, n) => sum + n, 0), 6)
})

t.test('a second leaves the window after five minutes, and its slot then counts a new second from zero', async (t) => {
  const history = new PerSecondHistory()
  history.add(T0)
  history.add(T0)
  const at = (s: number) => history.window(T0 + s * 1000).counts
  t.equal(at(HISTORY_SECONDS - 1)[0], 2, 'still the oldest second of the window')
  t.same(at(HISTORY_SECONDS).reduce((sum, n) => sum + n, 0), 0, 'gone once five minutes have passed')
  history.add(T0 + HISTORY_SECONDS * 1000 + 10) // the same slot, five minutes on
  t.same(at(HISTORY_SECONDS).slice(-1), [1], 'the reused slot starts from zero')
  history.add(T0 + 500) // heard late: older than the second its slot now counts
  t.same(at(HISTORY_SECONDS).reduce((sum, n) => sum + n, 0), 1, 'an event older than the window is dropped')
  history.add(T0 + 60_000) // heard a little late, still within the window
  t.equal(at(HISTORY_SECONDS)[59], 1, 'a late event within the window counts at its own second')
})
