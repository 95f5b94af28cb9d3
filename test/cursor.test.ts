import t from 'tap'
import { CursorCodec } from '../src/cursor.ts'

t.test('a cursor decodes to its position only with the key that signed it', async (t) => {
  const codec = new CursorCodec('k1')
  for (const seq of [1, 2, 1000, Number.MAX_SAFE_INTEGER]) t.equal(codec.decode(codec.encode(seq)), seq)
  t.equal(new CursorCodec('k2').decode(codec.encode(5)), null, 'another key refuses it')
  t.equal(codec.decode(''), null)
  t.equal(codec.decode('!!!'), null)
})
