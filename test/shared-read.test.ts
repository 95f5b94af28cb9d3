import t from 'tap'
import { SharedRead } from '../src/store/shared-read.ts'

/** A read whose queries the test answers one by one, in order. */
function controlledRead () {
  const queries: Array<{ resolve: (value: number) => void, reject: (err: Error) => void }> = []
  const read = new SharedRead(() => new Promise<number>((resolve, reject) => { queries.push({ resolve, reject }) }))
  return { read, queries }
}

t.test('callers that ask while a query runs share the next one, never the one under way', async (t) => {
  const { read, queries } = controlledRead()
  const first = read.get()
  t.equal(queries.length, 1, 'one query')
  const [second, third] = [read.get(), read.get()]
  t.equal(queries.length, 1, 'the others wait for it to end before theirs starts')
  queries[0]!.resolve(1)
  t.equal(await first, 1)
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(queries.length, 2, 'then one query for both')
  queries[1]!.resolve(2)
  t.same(await Promise.all([second, third]), [2, 2], 'both get the query that started after they asked')
  const fourth = read.get()
  t.equal(queries.length, 3, 'nothing under way: a caller starts a query at once')
  queries[2]!.resolve(3)
  t.equal(await fourth, 3)
})

t.test('a failed query fails its callers only; the next starts as usual', async (t) => {
  const { read, queries } = controlledRead()
  const first = read.get()
  const second = read.get()
  queries[0]!.reject(new Error('down'))
  await t.rejects(first, { message: 'down' })
  await new Promise((resolve) => setImmediate(resolve))
  queries[1]!.resolve(5)
  t.equal(await second, 5)
})
