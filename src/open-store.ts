import type { OrderStore } from './store.ts'
import { SqliteStore } from './sqlite-store.ts'

/** Picks the store named by DATABASE_URL. */
export async function openStore (databaseUrl: string): Promise<OrderStore> {
  if (databaseUrl.startsWith('sqlite:')) return new SqliteStore(databaseUrl.slice('sqlite:'.length))
  throw new Error(`DATABASE_URL ${new URL(databaseUrl).protocol} stores are not supported yet`)
}
