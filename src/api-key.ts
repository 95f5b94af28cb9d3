import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * Checks `Authorization: Bearer <key>` in constant time: both sides are hashed first, so neither
 * the key's content nor its length leaks through timing.
 */
export function bearerMatches (header: string | undefined, key: string): boolean {
  const presented = /^Bearer (.+)$/.exec(header ?? '')?.[1] ?? ''
  const digest = (text: string) => createHash('sha256').update(text).digest()
  return timingSafeEqual(digest(presented), digest(key)) && presented.length > 0
}
