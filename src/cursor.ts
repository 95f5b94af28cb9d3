import { createHmac, timingSafeEqual } from 'node:crypto'
import type { ListOrder } from './store/order-store.ts'

/** Bytes of HMAC kept in a cursor: enough that a made-up cursor is refused. */
const TAG_BYTES = 12

/**
 * The list a cursor walks, part of what it signs: a position means "after this row" only in the
 * list it came from, so a cursor is refused by every other (another order of /orders, another
 * endpoint's deliveries, or an endpoint's deliveries for /orders). The names of the two /orders lists
 * are those signed before there were others, so cursors of /orders issued earlier stay valid.
 */
export type CursorList = 'seq' | 'seq-desc' | `deliveries:${string}`

export const ordersList = (order: ListOrder): CursorList => (order === 'asc' ? 'seq' : 'seq-desc')

// Not the status: a position is as meaningful in one status's deliveries as in another's, as it is whatever the filters of /orders.
export const deliveriesList = (endpointId: string): CursorList => `deliveries:${endpointId}`

/** The 400 for a cursor that decodes for no list it could be meant for: another list's, or made up. */
export const CURSOR_NOT_ISSUED = 'querystring/cursor was not issued for this list: send the next_cursor it answered, or start again without a cursor'

/**
 * List cursors are opaque to clients: a keyset position (a sequence number) signed with a key the
 * store keeps, so that a cursor this service did not issue is refused, by every process sharing the
 * store, and so is one issued for another list.
 */
export class CursorCodec {
  constructor (private readonly key: string) {}

  private tag (seq: number, list: CursorList): Buffer {
    return createHmac('sha256', this.key).update(`${list}:${seq}`).digest().subarray(0, TAG_BYTES)
  }

  encode (seq: number, list: CursorList): string {
    const position = Buffer.alloc(8)
    position.writeBigUInt64BE(BigInt(seq))
    return Buffer.concat([position, this.tag(seq, list)]).toString('base64url')
  }

  /** The position in a cursor this service issued for this list, or null for anything else. */
  decode (cursor: string, list: CursorList): number | null {
    const bytes = Buffer.from(cursor, 'base64url')
    if (bytes.length !== 8 + TAG_BYTES || bytes.toString('base64url') !== cursor) return null
    const seq = Number(bytes.readBigUInt64BE(0))
    if (!Number.isSafeInteger(seq)) return null
    return timingSafeEqual(bytes.subarray(8), this.tag(seq, list)) ? seq : null
  }
}
