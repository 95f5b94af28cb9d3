import t from 'tap'
import { BATCH_BODY_LIMIT, MAX_BATCH_ORDERS } from '../../routes/order-batch.ts'
import { anOrder, build, waitFor } from '../helper.ts'
import { recount } from '../support/store-contract.ts'

const batch = (orders: unknown[]) => ({ method: 'POST' as const, url: '/orders/batch', payload: { orders } })

t.test('POST /orders/batch creates every order in one go, with a result per order in the order sent', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  await app.inject({ method: 'POST', url: '/orders', payload: anOrder('B0') })
  const res = await app.inject(batch([
    anOrder('B1'), anOrder('B0'), anOrder('B0', { total_amount: 1 }), anOrder('B2'), anOrder('B2'), anOrder('B2', { item_ids: [1] })
  ]))
  t.equal(res.statusCode, 200)
  t.same(res.json(), {
    created: 2,
    existing: 2,
    conflicts: 2,
    results: [
      { order_id: 'B1', result: 'created' },
      { order_id: 'B0', result: 'exists' },
      { order_id: 'B0', result: 'conflict' },
      { order_id: 'B2', result: 'created' },
      { order_id: 'B2', result: 'exists' },
      { order_id: 'B2', result: 'conflict' }
    ]
  })
  t.match((await app.inject({ url: '/orders/B2' })).json(), { status: 'Pending', item_ids: [101, 102, 103], total_amount: 59.99 }, 'the first of an id sent twice')
  t.equal((await app.inject({ url: '/orders/B0' })).json().total_amount, 59.99, 'an existing order is left alone')
  t.same(await app.store.stats(), await recount(app.store))
})

t.test('an invalid order makes the whole batch a 400 naming it, and nothing is created', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const valid = Array.from({ length: 5 }, (_, i) => anOrder(`V${i}`))
  const cases: Array<[unknown, RegExp]> = [
    [{ orders: valid.map((o, i) => (i === 3 ? { ...o, total_amount: 1.005 } : o)) }, /^body\/orders\/3\/total_amount must have at most 2 decimal places$/],
    [{ orders: valid.map((o, i) => (i === 4 ? { ...o, user_id: '1' } : o)) }, /^body\/orders\/4\/user_id must be integer$/],
    [{ orders: valid.map((o, i) => (i === 1 ? { ...o, order_id: 'batch' } : o)) }, /^body\/orders\/1\/order_id is invalid/],
    [{ orders: valid.map((o, i) => (i === 2 ? { ...o, coupon: 'X' } : o)) }, /^body\/orders\/2 has unknown field 'coupon'$/],
    [{ orders: [] }, /^body\/orders must NOT have fewer than 1 items$/],
    [{ orders: Array.from({ length: MAX_BATCH_ORDERS + 1 }, (_, i) => anOrder(`M${i}`)) }, /^body\/orders must NOT have more than 1000 items$/],
    [{ orders: valid, dry_run: true }, /^body has unknown field 'dry_run'$/],
    [valid, /^body must be object$/],
    [{}, /^body is missing required field 'orders'$/]
  ]
  for (const [payload, error] of cases) {
    const res = await app.inject({ method: 'POST', url: '/orders/batch', payload: payload as object })
    t.equal(res.statusCode, 400, String(error))
    t.match(res.json(), { error })
  }
  t.equal((await app.inject({ url: '/orders/metrics' })).json().total_orders, 0, 'nothing was created')
})

t.test(`a batch body of up to ${BATCH_BODY_LIMIT} bytes is taken; one byte more is a 413`, async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  // 1,000 orders of as many 16-digit item ids as fit, then spaces (JSON whitespace) up to the byte.
  const itemIds = (count: number) => Array.from({ length: count }, (_, i) => Number.MAX_SAFE_INTEGER - i)
  const body = (count: number) => JSON.stringify({ orders: Array.from({ length: MAX_BATCH_ORDERS }, (_, i) => anOrder(`L${i}`, { item_ids: itemIds(count) })) })
  let count = 1
  while (Buffer.byteLength(body(count + 1)) <= BATCH_BODY_LIMIT) count++
  const largest = body(count)
  const send = (padding: number, prefix: string) => app.inject({
    method: 'POST',
    url: '/orders/batch',
    headers: { 'content-type': 'application/json' },
    payload: largest.replace(/"L/g, `"${prefix}`) + ' '.repeat(BATCH_BODY_LIMIT - Buffer.byteLength(largest) + padding)
  })

  const over = await send(1, 'X')
  t.equal(over.statusCode, 413)
  t.match(over.json(), { error: /too large/ })
  const atLimit = await send(0, 'L')
  t.equal(atLimit.statusCode, 200, `${MAX_BATCH_ORDERS} orders of ${count} item ids, ${BATCH_BODY_LIMIT} bytes`)
  t.equal(atLimit.json().created, MAX_BATCH_ORDERS)
  t.equal((await app.store.get('L999'))?.item_ids.length, count)
  t.equal(await app.store.get('X0'), undefined, 'the one over the limit created nothing')
})

t.test('orders created in a batch are processed', async (t) => {
  const app = await build(t)
  const orders = Array.from({ length: 300 }, (_, i) => anOrder(`P${i}`))
  t.equal((await app.inject(batch(orders))).json().created, 300)
  await waitFor(async () => (await app.store.stats()).counts.Completed === 300, 'every order completed')
  t.same(await app.store.stats(), await recount(app.store))
})
