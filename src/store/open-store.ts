import type { Config } from '../config.ts'
import type { OrderStore } from './order-store.ts'
import type { StoreLog } from './store-log.ts'
import { PgStore } from './pg/pg-store.ts'
import { SqliteStore } from './sqlite/sqlite-store.ts'

/** Picks the store named by DATABASE_URL (its form is checked with the rest of the configuration). */
export async function openStore (
  config: Pick<Config, 'DATABASE_URL' | 'DATABASE_TIMEOUT_MS' | 'SQLITE_BUSY_TIMEOUT_MS' | 'retention'>,
  log: StoreLog
): Promise<OrderStore> {
  const url = config.DATABASE_URL
  if (url.startsWith('sqlite:')) {
    const { orders, failedOrders } = config.retention
    return new SqliteStore(url.slice('sqlite:'.length), config.SQLITE_BUSY_TIMEOUT_MS, { ordersFinishedIndex: orders !== null || failedOrders !== null })
  }
  return PgStore.open(url, { timeoutMs: config.DATABASE_TIMEOUT_MS, log })
}
