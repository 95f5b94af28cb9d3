/** The store cannot serve this request now but may later (a deadline passed, too many waiting): a 503. */
export class StoreUnavailableError extends Error {}

/** SQLite result codes of a store that cannot write now but may later: locked, read-only, disk full or failing. */
const SQLITE_UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN)/
/**
 * Socket errors, and PostgreSQL's connection (08xxx), read-only transaction (25006: a standby
 * after a failover), idle transaction timeout (25P03), insufficient resources (53xxx: disk full,
 * too many connections), statement timeout (57014) and shutdown (57P0x) classes.
 */
const CONNECTION_CODES = /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|08...|25006|25P03|53...|57014|57P0.)$/
/** node-postgres' own: a lost connection, a connection or pool wait past connectionTimeoutMillis, a query past query_timeout. */
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/

/** Another populate call moved this batch on meanwhile: one batch is populated by one call at a time. */
export class BatchConflictError extends Error {
  constructor (batchId: string) {
    super(`batch_id ${batchId} is being populated by another request`)
    this.name = 'BatchConflictError'
  }
}

/** True for an error that means the store is unreachable or refuses writes for now (a 503), not a bug (a 500). */
export function isStoreUnavailable (err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return true
  const { code, message } = (err ?? {}) as { code?: unknown, message?: unknown }
  return (typeof code === 'string' && (SQLITE_UNAVAILABLE.test(code) || CONNECTION_CODES.test(code))) ||
    (typeof message === 'string' && CONNECTION_MESSAGES.test(message))
}
