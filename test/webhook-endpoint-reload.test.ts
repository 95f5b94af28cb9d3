import t from 'tap'
import pg from 'pg'
import { PgStore } from '../src/store/pg/pg-store.ts'
import { createDatabase, SKIP_POSTGRES } from './support/pg-database.ts'
import { recordingLog } from './support/recording-log.ts'
import { anOrder, waitFor } from './helper.ts'

t.test('PostgreSQL: an endpoint list reload that fails (a table lock outlasting the deadline) is tried again until it succeeds', { skip: SKIP_POSTGRES }, async (t) => {
  const database = await createDatabase()
  t.teardown(database.drop)
  const log = recordingLog()
  const store = await PgStore.open(database.url, { timeoutMs: 300, log })
  t.teardown(() => store.close())
  const other = new pg.Client({ connectionString: database.url })
  await other.connect()
  t.teardown(() => other.end())
  const locker = new pg.Client({ connectionString: database.url })
  await locker.connect()
  t.teardown(() => locker.end())

  // Another process registers an endpoint and announces it while a session holds the table.
  await locker.query('BEGIN')
  await other.query(`INSERT INTO webhook_endpoints (id, url, events, description, secret, created_at)
    VALUES ('ep_locked', 'http://127.0.0.1:9/', '["Pending"]', NULL, 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0', 0)`)
  await locker.query('LOCK TABLE webhook_endpoints IN ACCESS EXCLUSIVE MODE')
  await other.query("NOTIFY webhook_endpoints_changed, ''")
  await waitFor(() => log.entries.some((entry) => entry.message === 'could not reload webhook endpoints'), 'the reload to fail')
  await locker.query('COMMIT')

  // No further announcement: the retry alone must bring the endpoint in.
  let n = 0
  await waitFor(async () => {
    await store.create(anOrder(`A${++n}`), Date.now(), Date.now())
    return (await store.endpoint('ep_locked'))?.counts.pending !== 0
  }, 'a new order to be recorded for the endpoint')
  t.pass(`recorded after ${n} orders`)
})
