import t from 'tap'
import { GroupCommit, type Settled } from '../src/store/group-commit.ts'
import { isStoreUnavailable, StoreUnavailableError } from '../src/store/store-errors.ts'
import { waitFor } from './helper.ts'

t.test('while one batch is being written, the next keeps growing; outcomes reach each caller', async (t) => {
  const batches: number[][] = []
  const release: Array<() => void> = []
  const commit = new GroupCommit<number, number>(async (items) => {
    batches.push(items)
    await new Promise<void>((resolve) => release.push(resolve))
    return items.map((n): Settled<number> => (n < 0 ? { ok: false, error: new Error(`bad ${n}`) } : { ok: true, value: n * 10 }))
  })
  const first = commit.submit(1)
  await waitFor(() => batches.length === 1, 'the first batch to start')
  const later = [commit.submit(2), commit.submit(-3), commit.submit(4)]
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(batches.length, 1, 'no second write while the first is in flight')
  release[0]!()
  t.equal(await first, 10)
  await waitFor(() => batches.length === 2, 'the second batch')
  t.same(batches, [[1], [2, -3, 4]], 'everything that waited went in one batch')
  release[1]!()
  const settled = await Promise.allSettled(later)
  t.same(settled.map((s) => s.status), ['fulfilled', 'rejected', 'fulfilled'], "one item's failure fails only its caller")
  t.equal((settled[2] as PromiseFulfilledResult<number>).value, 40)
})

t.test('beyond maxWaiting items waiting for the next batch, one more is refused at once as "store unavailable"', async (t) => {
  const release: Array<() => void> = []
  const commit = new GroupCommit<number, number>(async (items) => {
    await new Promise<void>((resolve) => release.push(resolve))
    return items.map((n): Settled<number> => ({ ok: true, value: n }))
  }, 2)
  const first = commit.submit(1)
  await waitFor(() => release.length === 1, 'the first batch to start')
  const waiting = [commit.submit(2), commit.submit(3)]
  const refused = await commit.submit(4).catch((err: unknown) => err)
  t.ok(refused instanceof StoreUnavailableError && isStoreUnavailable(refused), 'refused while two wait')
  t.match((refused as Error).message, /2 writes are already waiting/)

  release[0]!()
  t.equal(await first, 1)
  await waitFor(() => release.length === 2, 'the waiting items to be written')
  const later = commit.submit(5)
  release[1]!()
  t.same(await Promise.all(waiting), [2, 3])
  await waitFor(() => release.length === 3, 'the next batch')
  release[2]!()
  t.equal(await later, 5, 'room again once they are written')
})
