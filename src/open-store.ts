import type { OrderStore } from './store.ts'
import { PgStore } from './pg-store.ts'
import { SqliteStore } from './sqlite-store.ts'

/** Picks the store named by DATABASE_URL (its form is checked with the rest of the configuration). */
export async function openStore (databaseUrl: string): Promise<OrderStore> {
  if (databaseUrl.startsWith('sqlite:')) return new SqliteStore(databaseUrl.slice('sqlite:'.length))
  return PgStore.open(databaseUrl)
}
