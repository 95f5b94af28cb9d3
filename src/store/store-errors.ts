/** SQLite result codes of a store that cannot write now but may later: locked, read-only, disk full or failing. */
const SQLITE_UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN)/
/**
 * Socket errors, and PostgreSQL's connection (08xxx), read-only transaction (25006: a standby
 * after a failover), insufficient resources (53xxx: disk full, too many connections) and
 * shutdown (57P0x) classes.
 */
const CONNECTION_CODES = /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|08...|25006|53...|57P0.)$/
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/

/** Another populate call moved this batch on meanwhile: one batch is populated by one call at a time. */
export class BatchConflictError extends Error {
  constructor (batchId: string) {
    super(`batch_id ${batchId} is being populated by another request`)
    this.name = 'BatchConflictError'
  }
}

/** True for an error that means the store is unreachable or refuses writes for now (a 503), not a bug (a 500). */
export function isStoreUnavailable (err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown, message?: unknown }
  return (typeof code === 'string' && (SQLITE_UNAVAILABLE.test(code) || CONNECTION_CODES.test(code))) ||
    (typeof message === 'string' && CONNECTION_MESSAGES.test(message))
}
