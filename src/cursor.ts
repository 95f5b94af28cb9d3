import { createHmac, timingSafeEqual } from 'node:crypto'
import type { ListOrder } from './store/order-store.ts'

/** Bytes of HMAC kept in a cursor: enough that a made-up cursor is refused. */
const TAG_BYTES = 12

/**
 * List cursors are opaque to clients: a keyset position (a sequence number) signed with a key the
 * store keeps, so that a cursor this service did not issue is refused, by every process sharing the store.
 * The signature covers the list's order too: a position means "after this order" only in the order
 * it was issued for (the same cursor read the other way would list the page it came from again), so
 * a cursor of one order is refused by the other. Oldest-first cursors sign as they did before there
 * was a choice, so those issued earlier stay valid.
 */
export class CursorCodec {
  constructor (private readonly key: string) {}

  private tag (seq: number, order: ListOrder): Buffer {
    return createHmac('sha256', this.key).update(`${order === 'asc' ? 'seq' : 'seq-desc'}:${seq}`).digest().subarray(0, TAG_BYTES)
  }

  encode (seq: number, order: ListOrder = 'asc'): string {
    const position = Buffer.alloc(8)
    position.writeBigUInt64BE(BigInt(seq))
    return Buffer.concat([position, this.tag(seq, order)]).toString('base64url')
  }

  /** The position in a cursor this service issued for a list in this order, or null for anything else. */
  decode (cursor: string, order: ListOrder = 'asc'): number | null {
    const bytes = Buffer.from(cursor, 'base64url')
    if (bytes.length !== 8 + TAG_BYTES || bytes.toString('base64url') !== cursor) return null
    const seq = Number(bytes.readBigUInt64BE(0))
    if (!Number.isSafeInteger(seq)) return null
    return timingSafeEqual(bytes.subarray(8), this.tag(seq, order)) ? seq : null
  }
}
