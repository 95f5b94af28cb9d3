import { createHash, timingSafeEqual } from 'node:crypto'

/** `read`: what changes nothing (GET routes, the event stream, /metrics); `write`: everything. */
export const SCOPES = ['read', 'write'] as const
export type Scope = typeof SCOPES[number]

/** What a request learns of the key it presented: never the key itself. */
export interface ApiKey { name: string, scope: Scope }
export interface KeyEntry extends ApiKey { key: string }

/** Shorter keys are refused: 16 characters is the floor API_KEY always had. */
export const MIN_KEY_LENGTH = 16

const digest = (text: string) => createHash('sha256').update(text).digest()

/** The key of `Authorization: Bearer <key>`; the scheme's name is case-insensitive (RFC 9110), so `bearer` works too. */
function bearerToken (header: string | undefined): string {
  return /^Bearer +(.+)$/i.exec(header ?? '')?.[1] ?? ''
}

/**
 * The keys a request may present, checked in constant time: both sides are hashed first, so
 * neither a key's content nor its length leaks through timing, and every key is compared, so
 * neither does which one matched. The keys' hashes are made once.
 */
export class KeyRing {
  private readonly entries: Array<ApiKey & { digest: Buffer }>

  constructor (keys: readonly KeyEntry[]) {
    this.entries = keys.map(({ name, scope, key }) => ({ name, scope, digest: digest(key) }))
  }

  /** The key in an Authorization header, or null when it names none of them. */
  find (header: string | undefined): ApiKey | null {
    const token = bearerToken(header)
    const presented = digest(token)
    let found: ApiKey | null = null
    for (const entry of this.entries) {
      if (timingSafeEqual(presented, entry.digest) && found === null) found = { name: entry.name, scope: entry.scope }
    }
    return token.length > 0 ? found : null
  }
}

export class KeyFileError extends Error {}

/**
 * The keys of an API_KEYS_FILE: one `name scope key` a line, whitespace between, `#` starts a
 * comment. The first bad line throws a KeyFileError naming it; no key is ever in a message.
 */
export function parseKeyFile (text: string): KeyEntry[] {
  const keys: KeyEntry[] = []
  const lineOfName = new Map<string, number>()
  const lineOfKey = new Map<string, number>()
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = index + 1
    const fields = raw.replace(/#.*/, '').trim().split(/\s+/).filter(Boolean)
    if (fields.length === 0) continue
    const fail = (why: string) => new KeyFileError(`line ${line}: ${why}`)
    if (fields.length !== 3) throw fail(`expected "name scope key", got ${fields.length} field${fields.length === 1 ? '' : 's'}`)
    const [name, scope, key] = fields as [string, string, string]
    if (!(SCOPES as readonly string[]).includes(scope)) throw fail(`unknown scope "${scope}" (read or write)`)
    if (key.length < MIN_KEY_LENGTH) throw fail(`the key of "${name}" is shorter than ${MIN_KEY_LENGTH} characters`)
    if (lineOfName.has(name)) throw fail(`the name "${name}" is already used on line ${lineOfName.get(name)}`)
    if (lineOfKey.has(key)) throw fail(`the key of "${name}" is already the key on line ${lineOfKey.get(key)}`)
    lineOfName.set(name, line)
    lineOfKey.set(key, line)
    keys.push({ name, scope: scope as Scope, key })
  }
  return keys
}
