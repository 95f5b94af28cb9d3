import t from 'tap'
import { PgStore } from '../src/store/pg/pg-store.ts'
import { createDatabase, SKIP_POSTGRES } from './support/pg-database.ts'
import { storeContract } from './support/store-contract.ts'

t.test('PostgreSQL store', { skip: SKIP_POSTGRES }, async (t) => {
  storeContract(t, async () => {
    const database = await createDatabase()
    const store = await PgStore.open(database.url)
    const close = store.close.bind(store)
    store.close = async () => { await close(); await database.drop() }
    return store
  })
})
