import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { PgStore } from '../../src/store/pg/pg-store.ts'
import { recordingLog } from './recording-log.ts'

/** The PostgreSQL server to test against, from DATABASE_URL; undefined when tests run on SQLite only. */
export const POSTGRES_URL = process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : undefined

export const SKIP_POSTGRES = POSTGRES_URL ? false : 'DATABASE_URL is not a postgres:// URL: PostgreSQL tests skipped'

/**
 * For a test that runs on SQLite whatever DATABASE_URL says (it names its file or `:memory:`): a run
 * on PostgreSQL would only repeat the run without it (CI runs both, one after the other).
 */
export const SKIP_SQLITE_ONLY = POSTGRES_URL ? 'on SQLite whatever DATABASE_URL says: run by `npm test` without a postgres:// DATABASE_URL' : false

/** Creates an empty database of its own for one test; `drop` removes it. */
export async function createDatabase (server = POSTGRES_URL): Promise<{ url: string, drop: () => Promise<void> }> {
  const name = `orders_test_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: server })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = new URL(server as string)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: server })
      await client.connect()
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await client.end()
    }
  }
}

/** A PostgreSQL store for a test, with the default deadline and a log the test may read. */
export async function openPgStore (url: string, timeoutMs = 5000): Promise<PgStore> {
  return PgStore.open(url, { timeoutMs, log: recordingLog() })
}
