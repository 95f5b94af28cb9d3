import t from 'tap'
import { CursorCodec, deliveriesList, ordersList } from '../src/cursor.ts'

t.test('a cursor decodes to its position only with the key that signed it', async (t) => {
  const codec = new CursorCodec('k1')
  const list = ordersList('asc')
  for (const seq of [1, 2, 1000, Number.MAX_SAFE_INTEGER]) t.equal(codec.decode(codec.encode(seq, list), list), seq)
  t.equal(new CursorCodec('k2').decode(codec.encode(5, list), list), null, 'another key refuses it')
  t.equal(codec.decode('', list), null)
  t.equal(codec.decode('!!!', list), null)
})

t.test('a cursor decodes only for the list it was issued for; those of /orders are signed as before there were other lists', async (t) => {
  const codec = new CursorCodec('k1')
  const lists = [ordersList('asc'), ordersList('desc'), deliveriesList('ep_a'), deliveriesList('ep_b')]
  for (const issued of lists) {
    for (const sent of lists) t.equal(codec.decode(codec.encode(7, issued), sent), issued === sent ? 7 : null, `issued for ${issued}, sent to ${sent}`)
  }
  // Issued by the codec before lists had an order (its HMAC input was `seq:<n>`), still accepted.
  t.equal(codec.decode('AAAAAAAAAAe177cz0V-YzjoDbF8', ordersList('asc')), 7)
})
