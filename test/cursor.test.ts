import t from 'tap'
import { CursorCodec } from '../src/cursor.ts'

t.test('a cursor decodes to its position only with the key that signed it', async (t) => {
  const codec = new CursorCodec('k1')
  for (const seq of [1, 2, 1000, Number.MAX_SAFE_INTEGER]) t.equal(codec.decode(codec.encode(seq)), seq)
  t.equal(new CursorCodec('k2').decode(codec.encode(5)), null, 'another key refuses it')
  t.equal(codec.decode(''), null)
  t.equal(codec.decode('!!!'), null)
})

t.test('a cursor decodes only for the order it was issued for; oldest-first cursors are signed as before there was a choice', async (t) => {
  const codec = new CursorCodec('k1')
  t.equal(codec.decode(codec.encode(7, 'desc'), 'desc'), 7)
  t.equal(codec.decode(codec.encode(7, 'desc'), 'asc'), null, 'a newest-first cursor is refused oldest first')
  t.equal(codec.decode(codec.encode(7, 'asc'), 'desc'), null, 'and the other way')
  t.equal(codec.encode(7), codec.encode(7, 'asc'))
  // Issued by the codec before lists had an order (its HMAC input was `seq:<n>`), still accepted.
  t.equal(codec.decode('AAAAAAAAAAe177cz0V-YzjoDbF8'), 7)
})
