import t from 'tap'
import type { InjectOptions } from 'fastify'
import { anOrder, build } from './helper.ts'

const JSON_TYPE = { 'content-type': 'application/json' }
const order = anOrder('GOOD1')
const post = (payload: unknown): InjectOptions => ({ method: 'POST', url: '/orders', payload: payload as object })
const raw = (body: string, headers: Record<string, string> = JSON_TYPE, url = '/orders'): InjectOptions =>
  ({ method: 'POST', url, payload: body, headers })
const without = (field: keyof typeof order) => Object.fromEntries(Object.entries(order).filter(([k]) => k !== field))
const withField = (field: string, value: unknown) => ({ ...order, [field]: value })

/** Each request must get a 4xx JSON error, and none may create anything. */
const cases: Array<[string, InjectOptions, number, RegExp?]> = [
  ['no body at all', { method: 'POST', url: '/orders' }, 400],
  ['empty JSON body', raw(''), 400],
  ['truncated JSON', raw('{"user_id": 1,'), 400],
  ['JSON followed by garbage', raw(`${JSON.stringify(order)} x`), 400],
  ['text/plain', raw(JSON.stringify(order), { 'content-type': 'text/plain' }), 415, /send the body as application\/json/],
  ['form encoded', raw('user_id=1', { 'content-type': 'application/x-www-form-urlencoded' }), 415],
  ['XML', raw('<order/>', { 'content-type': 'application/xml' }), 415],
  ['a JSON array', post([order]), 400],
  ['JSON null', raw('null'), 400],
  ['a JSON string', raw('"order"'), 400],
  ['a JSON number', raw('42'), 400],
  ['missing user_id', post(without('user_id')), 400, /missing required field 'user_id'/],
  ['missing order_id', post(without('order_id')), 400, /missing required field 'order_id'/],
  ['missing item_ids', post(without('item_ids')), 400, /missing required field 'item_ids'/],
  ['missing total_amount', post(without('total_amount')), 400, /missing required field 'total_amount'/],
  ['unknown field', post(withField('coupon', 'FREE')), 400, /unknown field 'coupon'/],
  ['user_id as a string', post(withField('user_id', '1')), 400, /user_id must be integer/],
  ['negative user_id', post(withField('user_id', -1)), 400, /user_id/],
  ['fractional user_id', post(withField('user_id', 1.5)), 400, /user_id must be integer/],
  ['user_id past 2^53-1', raw(JSON.stringify(order).replace('"user_id":1', '"user_id":9007199254740992')), 400, /user_id/],
  ['user_id null', post(withField('user_id', null)), 400],
  ['user_id true', post(withField('user_id', true)), 400],
  ['empty order_id', post(withField('order_id', '')), 400, /order_id/],
  ['order_id of 65 characters', post(withField('order_id', 'a'.repeat(65))), 400, /order_id/],
  ['order_id "metrics"', post(withField('order_id', 'metrics')), 400, /order_id is invalid/],
  ['order_id "populate"', post(withField('order_id', 'populate')), 400, /order_id/],
  ['order_id "stream"', post(withField('order_id', 'stream')), 400, /order_id/],
  ['order_id starting with punctuation', post(withField('order_id', '-abc')), 400, /order_id/],
  ['order_id with a space', post(withField('order_id', 'a b')), 400, /order_id/],
  ['order_id with a slash', post(withField('order_id', 'a/b')), 400, /order_id/],
  ['order_id with non-ASCII letters', post(withField('order_id', 'ordér')), 400, /order_id/],
  ['order_id as a number', post(withField('order_id', 123)), 400, /order_id must be string/],
  ['empty item_ids', post(withField('item_ids', [])), 400, /item_ids/],
  ['1001 item_ids', post(withField('item_ids', Array.from({ length: 1001 }, (_, i) => i))), 400, /item_ids/],
  ['item_ids as the original comma string', post(withField('item_ids', '1,2,3')), 400, /item_ids must be array/],
  ['an item id as a string', post(withField('item_ids', [1, '2'])), 400, /item_ids\/1/],
  ['a negative item id', post(withField('item_ids', [-1])), 400, /item_ids\/0/],
  ['a fractional item id', post(withField('item_ids', [1.5])), 400, /item_ids\/0/],
  ['a null item id', post(withField('item_ids', [null])), 400, /item_ids\/0/],
  ['total_amount as a string', post(withField('total_amount', '59.99')), 400, /total_amount must be number/],
  ['negative total_amount', post(withField('total_amount', -0.01)), 400, /total_amount/],
  ['total_amount 1e309 (Infinity)', raw(JSON.stringify(order).replace('59.99', '1e309')), 400, /total_amount/],
  ['three decimal places', post(withField('total_amount', 1.005)), 400, /total_amount must have at most 2 decimal places/],
  ['total_amount over 10^13', post(withField('total_amount', 1e13 + 0.01)), 400, /total_amount/],
  ['total_amount null', post(withField('total_amount', null)), 400],
  ['a __proto__ key', raw(`{"__proto__":{"polluted":true},${JSON.stringify(order).slice(1)}`), 400, /^Body must not contain a __proto__ key/],
  ['a nested __proto__ key', raw(JSON.stringify(order).replace('"user_id"', '"x":{"__proto__":{}},"user_id"')), 400, /__proto__ key/],
  ['a constructor.prototype key', raw(`{"constructor":{"prototype":{"polluted":true}},${JSON.stringify(order).slice(1)}`), 400, /constructor key holding prototype/],
  ['a body over 1 MiB', raw(JSON.stringify({ ...order, pad: 'x'.repeat(1_100_000) })), 413],
  ['GET an invalid order id', { url: '/orders/bad%20id' }, 400, /order_id/],
  ['GET a malformed URL', { url: '/orders/%' }, 400, /is not a valid url component/],
  ['GET an order id of 101 characters', { url: `/orders/${'a'.repeat(101)}` }, 414],
  ['GET a reserved order id', { url: '/orders/populate' }, 400, /order_id/],
  ['list with limit=0', { url: '/orders?limit=0' }, 400, /limit/],
  ['list with limit=1001', { url: '/orders?limit=1001' }, 400, /limit/],
  ['list with limit=abc', { url: '/orders?limit=abc' }, 400, /limit/],
  ['list with an unknown status', { url: '/orders?status=Shipped' }, 400, /status must be one of: Pending, Processing, Completed, Failed, Cancelled/],
  ['list with a negative user_id', { url: '/orders?user_id=-1' }, 400, /user_id/],
  // Ajv converts what JavaScript's == takes for a number: these erased user 16, 16 and 1000.
  ['erase a customer written in hex', { method: 'DELETE', url: '/orders?user_id=0x10' }, 400, /^querystring\/user_id must be integer$/],
  ['erase a customer written after a space', { method: 'DELETE', url: '/orders?user_id=%2016' }, 400, /user_id must be integer/],
  ['erase a customer written with an exponent', { method: 'DELETE', url: '/orders?user_id=1e3' }, 400, /user_id must be integer/],
  ['list with limit=1e2', { url: '/orders?limit=1e2' }, 400, /limit must be integer/],
  ['list with an unknown parameter', { url: '/orders?sort=desc' }, 400, /unknown field 'sort'/],
  ['list with a forged cursor', { url: '/orders?cursor=abc' }, 400, /cursor/],
  ['cancel an invalid order id', { method: 'POST', url: '/orders/bad%20id/cancel' }, 400, /order_id/],
  ['populate 0 entries', raw('{"total_entries":0}', JSON_TYPE, '/orders/populate'), 400, /total_entries must be >= 1/],
  ['populate with entries as a string', raw('{"total_entries":"10"}', JSON_TYPE, '/orders/populate'), 400, /total_entries must be integer/],
  ['populate 1.5 entries', raw('{"total_entries":1.5}', JSON_TYPE, '/orders/populate'), 400],
  ['populate past POPULATE_MAX', raw('{"total_entries":1000001}', JSON_TYPE, '/orders/populate'), 400, /total_entries/],
  ['populate with a bad batch_id', raw('{"total_entries":1,"batch_id":"no spaces!"}', JSON_TYPE, '/orders/populate'), 400, /batch_id/],
  ['populate with an unknown field', raw('{"total_entries":1,"user_id":3}', JSON_TYPE, '/orders/populate'), 400, /unknown field/],
  ['pause with a field it does not read', raw('{"until":"tomorrow"}', JSON_TYPE, '/processing/pause'), 400, /^body has unknown field 'until'$/],
  ['pause with a JSON array', raw('[]', JSON_TYPE, '/processing/pause'), 400, /body must be object/],
  ['resume with a field it does not read', raw('{"force":true}', JSON_TYPE, '/processing/resume'), 400, /^body has unknown field 'force'$/],
  ['populate without a body', { method: 'POST', url: '/orders/populate' }, 400],
  ['metrics with getOrderIds=yes', { url: '/orders/metrics?getOrderIds=yes' }, 400, /getOrderIds/],
  ['an unknown route', { url: '/nope' }, 404, /not found/],
  ['DELETE an order', { method: 'DELETE', url: '/orders/ORD1' }, 404],
  ['PUT /orders', { method: 'PUT', url: '/orders', payload: order }, 404]
]

t.test(`${cases.length} malformed requests get a 4xx JSON error and create nothing`, async (t) => {
  const app = await build(t)
  for (const [name, request, status, message] of cases) {
    const res = await app.inject(request)
    t.equal(res.statusCode, status, `${name}: status`)
    t.match(res.headers['content-type'], /^application\/json/, `${name}: JSON`)
    const body = res.json()
    t.same(Object.keys(body), ['error'], `${name}: only an error field`)
    t.type(body.error, 'string')
    if (message) t.match(body.error, message, `${name}: ${body.error}`)
    t.notMatch(res.body, /\bat .*\.(ts|js):\d+/, `${name}: no stack trace`)
  }
  const stats = await app.store.stats()
  t.same(Object.values(stats.counts), [0, 0, 0, 0, 0], 'nothing was created')
  t.equal((await app.inject({ url: '/processing' })).json().state, 'running', 'a refused pause paused nothing')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: order })).statusCode, 201, 'and the service still works')
})
