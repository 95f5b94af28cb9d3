/** List cursors are opaque to clients; inside they are the keyset position (a sequence number). */
export function encodeCursor (seq: number): string {
  return Buffer.from(`seq:${seq}`).toString('base64url')
}

/** The position in a cursor this service issued, or null for anything else. */
export function decodeCursor (cursor: string): number | null {
  const match = /^seq:([1-9][0-9]{0,15})$/.exec(Buffer.from(cursor, 'base64url').toString())
  if (!match) return null
  const seq = Number(match[1])
  // Base64 has more than one spelling of some byte strings; only the one we issue is accepted.
  return Number.isSafeInteger(seq) && encodeCursor(seq) === cursor ? seq : null
}
