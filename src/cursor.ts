import { createHmac, timingSafeEqual } from 'node:crypto'

/** Bytes of HMAC kept in a cursor: enough that a made-up cursor is refused. */
const TAG_BYTES = 12

/**
 * List cursors are opaque to clients: a keyset position (a sequence number) signed with a key the
 * store keeps, so that a cursor this service did not issue is refused, by every process sharing the store.
 */
export class CursorCodec {
  constructor (private readonly key: string) {}

  private tag (seq: number): Buffer {
    return createHmac('sha256', this.key).update(`seq:${seq}`).digest().subarray(0, TAG_BYTES)
  }

  encode (seq: number): string {
    const position = Buffer.alloc(8)
    position.writeBigUInt64BE(BigInt(seq))
    return Buffer.concat([position, this.tag(seq)]).toString('base64url')
  }

  /** The position in a cursor this service issued, or null for anything else. */
  decode (cursor: string): number | null {
    const bytes = Buffer.from(cursor, 'base64url')
    if (bytes.length !== 8 + TAG_BYTES || bytes.toString('base64url') !== cursor) return null
    const seq = Number(bytes.readBigUInt64BE(0))
    if (!Number.isSafeInteger(seq)) return null
    return timingSafeEqual(bytes.subarray(8), this.tag(seq)) ? seq : null
  }
}
