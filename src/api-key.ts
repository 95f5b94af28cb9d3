import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (text: string) => createHash('sha256').update(text).digest()

/**
 * A check of `Authorization: Bearer <key>` in constant time: both sides are hashed first, so
 * neither the key's content nor its length leaks through timing. The key's hash is made once.
 */
export function bearerChecker (key: string): (header: string | undefined) => boolean {
  const expected = digest(key)
  return (header) => {
    const presented = /^Bearer (.+)$/.exec(header ?? '')?.[1] ?? ''
    return timingSafeEqual(digest(presented), expected) && presented.length > 0
  }
}
