import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import { ORDER_STATUSES, type OrderStatus } from '../src/order.ts'
import { RETRY_CHUNK } from '../src/retry-failed.ts'
import type { IndexedCall, ListQuery } from '../src/store/order-store.ts'
import type { PgStore, PlanNode } from '../src/store/pg/pg-store.ts'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts'
import { SQL as SQLITE_SQL } from '../src/store/sqlite/statements.ts'
import { BEGIN_INDEX_WALKS, listQuery, SQL as PG_SQL } from '../src/store/pg/statements.ts'
import { tempDir } from './helper.ts'
import { createDatabase, openPgStore, SKIP_POSTGRES, SKIP_SQLITE_ONLY } from './support/pg-database.ts'

// Every read that must cost its limit, whatever the data, is explained on data skewed the way that
// misleads a planner: 200,000 orders, 98% of them user 0's, mostly Completed, a few Cancelled or
// Failed spread through, and the Pending ones all at the end. With statistics gathered (ANALYZE).
const ORDERS = 200_000
const SKEWED_ROWS = `SELECT 'o' || i, CASE WHEN i % 50 = 0 THEN i % 1000 ELSE 0 END, '[1,2,3]', 100,
    CASE WHEN i > ${ORDERS - 5000} THEN 'Pending' WHEN i % 100 = 1 THEN 'Cancelled' WHEN i % 100 = 2 THEN 'Failed' ELSE 'Completed' END,
    i, i, i`
const INSERT = 'INSERT INTO orders (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)'

// Webhook deliveries skewed alike: 200,000 for three events of each order, nearly all to one endpoint
// and delivered, some failed, and the pending ones (due at their sequence number) all at the end.
const DELIVERIES = 200_000
const SKEWED_DELIVERIES = `SELECT 'msg_' || i, CASE WHEN i % 50 = 0 THEN 'ep_b' ELSE 'ep_a' END, 'o' || (i / 3), 'order.completed', '{}',
    CASE WHEN i > ${DELIVERIES - 5000} THEN 'pending' WHEN i % 100 = 1 THEN 'failed' ELSE 'delivered' END,
    CASE WHEN i > ${DELIVERIES - 5000} THEN i END, i, i`
const INSERT_DELIVERIES = 'INSERT INTO webhook_deliveries (id, endpoint_id, order_id, event_type, payload, status, next_attempt_at, created_at, updated_at)'

/**
 * What a delivery claim's walk of the due index filters out: the deliveries of endpoints whose
 * circuit is open, listed as a constant (which PostgreSQL hashes), not compared id by id; with
 * none open, nothing.
 */
const OPEN_CIRCUITS_FILTER = /^(\((\(status = 'pending'::text\) AND )?\(endpoint_id <> ALL \('\{[^}]+\}'::text\[\]\)\)( AND \(status = 'pending'::text\))?\)|(\(status = 'pending'::text\))?)$/

/** Each read of the delivery loop and of the delivery lists, where it is dense, rare or late. */
function deliveryCalls (): IndexedCall[] {
  return [
    ['claimDeliveries', 100, DELIVERIES, 30_000],
    ['claimDeliveries', 100, 0, 30_000],
    ['nextDeliveryIn', 0],
    ...(['ep_a', 'ep_b'] as const).flatMap((endpointId) => (['pending', 'delivered', 'failed'] as const).flatMap((status) =>
      [undefined, DELIVERIES * 0.9].map((before): IndexedCall => ['deliveries', endpointId, { status, limit: 100, before }])))
  ]
}

/**
 * Each filter combination, with statuses and users dense, rare, late or absent, from the start and
 * from a cursor, oldest first and newest first (where the late Pending orders come first, or, from
 * a cursor early on, not at all).
 */
function listQueries (): ListQuery[] {
  const filters: Array<Pick<ListQuery, 'status' | 'userId'>> = [
    {},
    ...(['Completed', 'Cancelled', 'Pending'] as OrderStatus[]).map((status) => ({ status })),
    ...[0, 7, 424242].map((userId) => ({ userId })),
    ...(['Completed', 'Cancelled', 'Pending'] as OrderStatus[]).flatMap((status) => [0, 7].map((userId) => ({ status, userId })))
  ]
  const positions: Array<Pick<ListQuery, 'order' | 'after'>> = [
    { after: 0 }, { after: ORDERS * 0.75 }, { order: 'desc' }, { order: 'desc', after: ORDERS * 0.25 }
  ]
  return filters.flatMap((filter) => positions.flatMap((position) => [100, 1000].map((limit) => ({ ...filter, ...position, limit }))))
}

function idsQueries (): Array<[OrderStatus, number]> {
  return (['Completed', 'Cancelled', 'Pending'] as OrderStatus[]).flatMap((status) => [0, ORDERS * 0.75].map((after): [OrderStatus, number] => [status, after]))
}

/**
 * The index that holds every filter of a list and then seq, and the columns its search must be
 * bounded by. A customer's orders have no index of their own: those are read a status at a time.
 */
function listIndex ({ status, userId }: ListQuery): { index: string, columns: string[] } {
  if (userId !== undefined) return { index: 'orders_by_status_user', columns: ['status', 'user_id', 'seq'] }
  if (status !== undefined) return { index: 'orders_by_status', columns: ['status', 'seq'] }
  return { index: 'orders_pkey', columns: ['seq'] }
}

const describe = (call: IndexedCall) => JSON.stringify(call)

t.test('SQLite: every list filter, idsByStatus, claim, nextAvailableAt, retryFailed, the webhook delivery reads and each sweep batch search an index bounded by all their conditions', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const path = join(tempDir(t), 'orders.db')
  const store = new SqliteStore(path)
  t.teardown(() => store.close())
  const other = new Database(path)
  other.exec(`WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${ORDERS}) ${INSERT} ${SKEWED_ROWS} FROM n`)
  other.exec(`WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${DELIVERIES}) ${INSERT_DELIVERIES} ${SKEWED_DELIVERIES} FROM n; ANALYZE`)
  const promotion = other.prepare(`EXPLAIN QUERY PLAN ${SQLITE_SQL.promoteNext}`).all({ endpointId: 'ep_a', orderId: 'o1', now: 0 }) as Array<{ detail: string }>
  other.close()

  const expect = (call: IndexedCall, plan: string[]) => t.same(store.explain(...call), plan, describe(call))
  for (const query of listQueries()) {
    const { index, columns } = listIndex(query)
    const past = query.order === 'desc' ? '<' : '>'
    const bounds = columns.map((column) => `${column}${column === 'seq' ? past : '='}?`).join(' AND ')
    if (query.userId !== undefined && query.status === undefined) {
      // A customer's orders of every status: each status's range of orders_by_status_user, merged.
      const plan = store.explain('list', query)
      const search = `SEARCH orders USING INDEX orders_by_status_user (status=? AND user_id=? AND seq${past}?)`
      t.same(plan.filter((line) => !/^(MERGE \(UNION ALL\)|LEFT|RIGHT)$/.test(line)), Array(5).fill(search), `${describe(['list', query])}: ${plan.join('; ')}`)
      continue
    }
    expect(['list', query], [index === 'orders_pkey'
      ? `SEARCH orders USING INTEGER PRIMARY KEY (rowid${past}?)`
      : `SEARCH orders USING INDEX ${index} (${bounds})`])
  }
  for (const [status, after] of idsQueries()) {
    expect(['idsByStatus', status, 1000, after], ['SEARCH orders USING INDEX orders_by_status (status=? AND seq>?)'])
  }
  for (const after of [0, ORDERS * 0.75]) {
    expect(['retryFailed', RETRY_CHUNK, ORDERS, after], ['SEARCH orders USING INDEX orders_by_status (status=? AND seq>?)'])
  }
  // The processing state is one row, read once.
  expect(['claim', 1000, ORDERS, 30_000], [
    'SEARCH orders USING INTEGER PRIMARY KEY (rowid=?)',
    'LIST SUBQUERY 2',
    'SEARCH orders USING COVERING INDEX orders_claimable (available_at<?)',
    'SCALAR SUBQUERY 1',
    'SCAN processing_state'
  ])
  // The smallest entry of the index of claimable orders: one seek (min() over an index stops at its first entry).
  expect(['nextAvailableAt'], ['SEARCH orders USING COVERING INDEX orders_claimable'])

  for (const call of deliveryCalls()) {
    if (call[0] === 'claimDeliveries') {
      // Due deliveries in due order, each with its endpoint's circuit (by key), each looking up the
      // earliest pending one of its order for its endpoint.
      expect(call, [
        'SEARCH d USING INDEX webhook_deliveries_due (next_attempt_at<?)',
        'SEARCH w USING PRIMARY KEY (id=?) LEFT-JOIN',
        'CORRELATED SCALAR SUBQUERY 1',
        'SEARCH e USING INDEX webhook_deliveries_chain (endpoint_id=? AND order_id=? AND rowid<?)'
      ])
    } else if (call[0] === 'nextDeliveryIn') {
      // The due index in its order up to the first delivery of an endpoint whose circuit is not open
      // (no sort), and the open circuits (few endpoints) with a delivery waiting.
      expect(call, [
        'CO-ROUTINE (subquery-5)',
        'SCAN CONSTANT ROW',
        'SCALAR SUBQUERY 2',
        'SCAN d USING INDEX webhook_deliveries_due',
        'CORRELATED SCALAR SUBQUERY 1',
        'SEARCH w USING PRIMARY KEY (id=?)',
        'SCALAR SUBQUERY 4',
        'SEARCH w USING PRIMARY KEY',
        'SEARCH d EXISTS USING COVERING INDEX webhook_deliveries_by_endpoint (endpoint_id=? AND status=?)',
        'SCAN (subquery-5)'
      ])
    } else {
      expect(call, ['SEARCH webhook_deliveries USING INDEX webhook_deliveries_by_endpoint (endpoint_id=? AND status=? AND rowid<?)'])
    }
  }
  // Each sweep and erasure batch picks its rows from an index range, then deletes them by rowid.
  const expected: Record<string, RegExp> = {
    sweepOrders: /^SEARCH orders USING (COVERING )?INDEX orders_finished \(status=\? AND updated_at<\?\)$/,
    deleteUserOrders: /^SEARCH orders USING (COVERING )?INDEX orders_by_status_user \(status=\? AND user_id=\?\)$/,
    sweepDeliveries: /^SEARCH webhook_deliveries USING (COVERING )?INDEX webhook_deliveries_settled \(updated_at<\?\)$/
  }
  for (const call of sweepCalls()) {
    const plan = store.explain(...call)
    t.ok(plan.some((line) => (expected[call[0]] as RegExp).test(line)), `${describe(call)}: ${plan.join('; ')}`)
    t.notOk(plan.some((line) => /^SCAN |TEMP B-TREE/.test(line)), `${describe(call)}: no scan, no sort`)
  }
  t.same(promotion.map((row) => row.detail), [
    'SEARCH webhook_deliveries USING INTEGER PRIMARY KEY (rowid=?)',
    'SCALAR SUBQUERY 1',
    'SEARCH webhook_deliveries USING COVERING INDEX webhook_deliveries_chain (endpoint_id=? AND order_id=?)'
  ], 'settling: the next pending delivery of an order to an endpoint is found from an index')
})

/** A store on a database of its own, and another session on that database to fill and read it. */
async function emptyPgStore (t: Test): Promise<{ store: PgStore, other: pg.Client }> {
  const database = await createDatabase()
  const store = await openPgStore(database.url)
  const other = new pg.Client({ connectionString: database.url })
  t.teardown(async () => { await other.end(); await store.close(); await database.drop() })
  await other.connect()
  return { store, other }
}

/** A PostgreSQL store on a database of its own, holding the skewed orders and deliveries, analyzed; and a client of its own. */
async function skewedPgStore (t: Test) {
  const { store, other } = await emptyPgStore(t)
  await other.query(`${INSERT} ${SKEWED_ROWS} FROM generate_series(1, ${ORDERS}) AS i`)
  await other.query(`${INSERT_DELIVERIES} ${SKEWED_DELIVERIES} FROM generate_series(1, ${DELIVERIES}) AS i`)
  await other.query('ANALYZE orders')
  await other.query('ANALYZE webhook_deliveries')
  return { store, other }
}

/** The nodes of a plan that read a table, and whether it sorts anywhere. */
function scansOf (plan: PlanNode, table = 'orders'): { scans: PlanNode[], sorts: boolean } {
  const scans: PlanNode[] = []
  let sorts = false
  const visit = (node: PlanNode) => {
    if (node['Relation Name'] === table && node['Node Type'].endsWith('Scan')) scans.push(node)
    if (node['Node Type'].includes('Sort')) sorts = true
    node.Plans?.forEach(visit)
  }
  visit(plan)
  return { scans, sorts }
}

/**
 * A read that costs its limit: the scan walks one index in order from where the conditions start
 * (an Index Scan whose Index Cond bounds every column given), filters nothing out and sorts nothing.
 * The claimable index is partial on status = 'Pending', which a locking read checks again: that
 * Filter removes no row.
 */
function boundedScan (t: Test, scan: PlanNode | undefined, index: string, columns: string[], what: string, filter?: RegExp): void {
  t.match(scan, { 'Node Type': /^Index (Only )?Scan$/, 'Index Name': index }, `${what}: reads ${index} in order`)
  for (const column of columns) t.match(scan?.['Index Cond'], new RegExp(`\\b${column}\\b`), `${what}: ${column} bounds the search`)
  if (filter) t.match(scan?.Filter ?? '', filter, `${what}: checks the one row it finds`)
  else if (index === 'orders_claimable') t.match(scan?.Filter ?? '', /^(\(status = 'Pending'::text\))?$/, `${what}: filters nothing out`)
  else if (index.startsWith('webhook_deliveries_')) t.match(scan?.Filter ?? '', /^(\(status = 'pending'::text\))?$/, `${what}: filters nothing out`)
  else t.equal(scan?.Filter, undefined, `${what}: filters nothing out`)
}

t.test('PostgreSQL: every list filter, idsByStatus, claim, nextAvailableAt, retryFailed and the webhook delivery reads read an index bounded by all their conditions', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, other } = await skewedPgStore(t)

  const check = async (call: IndexedCall, expected: Array<{ index: string, columns: string[] }>) => {
    const plan = await store.explain(...call)
    const { scans, sorts } = scansOf(plan)
    // A customer's orders of every status: each status's range read up to the limit, those sorted.
    if (call[0] === 'list' && call[1].status === undefined && call[1].userId !== undefined) {
      t.ok(scansUnderTheirLimit(plan, 'orders_by_status_user'), `${describe(call)}: each range read up to the limit, nothing sorted below it`)
    } else {
      t.notOk(sorts, `${describe(call)}: sorts nothing`)
    }
    t.equal(scans.length, expected.length, `${describe(call)}: reads orders ${expected.length} way(s)`)
    // The nth expectation of an index is checked against its nth read.
    expected.forEach(({ index, columns }, i) => {
      const nth = expected.slice(0, i).filter((e) => e.index === index).length
      boundedScan(t, scans.filter((s) => s['Index Name'] === index)[nth] ?? scans[i], index, columns, describe(call))
    })
  }
  for (const query of listQueries()) {
    // A customer's orders of every status: a range of each status.
    const ranges = query.status === undefined && query.userId !== undefined ? ORDER_STATUSES.length : 1
    await check(['list', query], Array.from({ length: ranges }, () => listIndex(query)))
    const { scans } = scansOf(await store.explain('list', query))
    t.equal(scans[0]?.['Scan Direction'], query.order === 'desc' ? 'Backward' : 'Forward', `${describe(['list', query])}: in the list's order`)
  }
  for (const [status, after] of idsQueries()) await check(['idsByStatus', status, 1000, after], [{ index: 'orders_by_status', columns: ['status', 'seq'] }])
  for (const after of [0, ORDERS * 0.75]) await check(['retryFailed', RETRY_CHUNK, ORDERS, after], [{ index: 'orders_by_status', columns: ['status', 'seq'] }])
  await check(['claim', 1000, ORDERS, 30_000], [
    { index: 'orders_claimable', columns: ['available_at'] },
    { index: 'orders_pkey', columns: ['seq'] }
  ])
  await check(['nextAvailableAt'], [{ index: 'orders_claimable', columns: ['available_at'] }])

  const deliveryScans = async (call: IndexedCall | PlanNode, expected: Array<{ index: string, columns: string[], filter?: RegExp }>) => {
    const what = 'Node Type' in call ? 'promoteNext' : describe(call)
    const { scans, sorts } = scansOf('Node Type' in call ? call : await store.explain(...call), 'webhook_deliveries')
    // A claim ranks the deliveries of each endpoint among the earliest limit × CLAIM_WINDOW due: a bounded sort.
    if ('Node Type' in call || call[0] !== 'claimDeliveries') t.notOk(sorts, `${what}: sorts nothing`)
    t.equal(scans.length, expected.length, `${what}: reads webhook_deliveries ${expected.length} way(s)`)
    expected.forEach(({ index, columns, filter }, i) => { boundedScan(t, scans.find((s) => s['Index Name'] === index) ?? scans[i], index, columns, what, filter) })
  }
  for (const call of deliveryCalls()) {
    if (call[0] === 'claimDeliveries') {
      // Filtered by one thing only: deliveries of an endpoint whose circuit is open are passed over.
      await deliveryScans(call, [
        { index: 'webhook_deliveries_due', columns: ['next_attempt_at'], filter: OPEN_CIRCUITS_FILTER },
        { index: 'webhook_deliveries_chain', columns: ['endpoint_id', 'order_id', 'seq'] },
        // the rows claimed, and those put off
        { index: 'webhook_deliveries_pkey', columns: ['seq'] },
        { index: 'webhook_deliveries_pkey', columns: ['seq'] }
      ])
    } else if (call[0] === 'nextDeliveryIn') {
      // The due index in order, and whether an open circuit's endpoint has a delivery waiting (the
      // index of pending deliveries by endpoint and order).
      await deliveryScans(call, [
        { index: 'webhook_deliveries_due', columns: [] },
        { index: 'webhook_deliveries_chain', columns: ['endpoint_id'] }
      ])
    } else {
      await deliveryScans(call, [{ index: 'webhook_deliveries_by_endpoint', columns: ['endpoint_id', 'status', 'seq'] }])
    }
  }
  const { rows } = await other.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (FORMAT JSON) ${PG_SQL.promoteNext}`, [['ep_a'], ['o1']])
  await deliveryScans(rows[0]!['QUERY PLAN'][0]!.Plan, [
    { index: 'webhook_deliveries_chain', columns: ['endpoint_id', 'order_id'] },
    { index: 'webhook_deliveries_pkey', columns: ['seq'], filter: /^\(\(lease_token IS NULL\) AND \(next_attempt_at > / }
  ])
})

/** Each batch of a sweep or an erasure, where what it deletes is dense (user 0, Completed), rare or absent. */
function sweepCalls (): IndexedCall[] {
  return [
    ...(['Completed', 'Cancelled', 'Failed'] as const).flatMap((status) => [ORDERS / 2, ORDERS].map((before): IndexedCall => ['sweepOrders', status, before, 1000])),
    ...[0, 7, 424242].map((userId): IndexedCall => ['deleteUserOrders', userId, 1000]),
    ['sweepDeliveries', DELIVERIES / 2, 1000]
  ]
}

t.test('PostgreSQL: each sweep and erasure batch deletes a range of an index', { skip: SKIP_POSTGRES }, async (t) => {
  const { store } = await skewedPgStore(t)
  const expected: Record<string, { index: string, columns: string[], table: string }> = {
    sweepOrders: { index: 'orders_finished', columns: ['updated_at'], table: 'orders' },
    deleteUserOrders: { index: 'orders_by_status_user', columns: ['status', 'user_id'], table: 'orders' },
    sweepDeliveries: { index: 'webhook_deliveries_settled', columns: ['updated_at'], table: 'webhook_deliveries' }
  }
  for (const call of sweepCalls()) {
    const { index, columns, table } = expected[call[0]] as { index: string, columns: string[], table: string }
    const plan = await store.explain(...call)
    const { scans } = scansOf(plan, table)
    t.notOk(scans.some((s) => s['Node Type'] === 'Seq Scan'), `${describe(call)}: no sequential scan`)
    if (call[0] === 'deleteUserOrders') t.ok(scansUnderTheirLimit(plan, index), `${describe(call)}: each status's range read up to the batch`)
    const scan = scans.find((s) => s['Index Name'] === index)
    t.match(scan, { 'Node Type': /^Index (Only )?Scan$/ }, `${describe(call)}: reads ${index}`)
    for (const column of columns) t.match(scan?.['Index Cond'], new RegExp(`\\b${column}\\b`), `${describe(call)}: ${column} bounds the search`)
  }
})

/** Whether every read of `index` in the plan is the only child of a Limit (a LockRows between them aside). */
function scansUnderTheirLimit (plan: PlanNode, index: string): boolean {
  let reads = 0
  let limited = 0
  const visit = (node: PlanNode, parent?: PlanNode, grandparent?: PlanNode) => {
    if (node['Index Name'] === index) {
      reads++
      if (parent?.['Node Type'] === 'Limit' || (parent?.['Node Type'] === 'LockRows' && grandparent?.['Node Type'] === 'Limit')) limited++
    }
    node.Plans?.forEach((child) => { visit(child, node, parent) })
  }
  visit(plan)
  return reads > 0 && reads === limited
}

/** The Limit nodes of a plan whose subtree reads `index`. */
function limitsOver (plan: PlanNode, index: string): PlanNode[] {
  const reads = (node: PlanNode): boolean => node['Index Name'] === index || (node.Plans ?? []).some(reads)
  const found: PlanNode[] = []
  const visit = (node: PlanNode) => {
    if (node['Node Type'] === 'Limit' && reads(node)) found.push(node)
    node.Plans?.forEach(visit)
  }
  visit(plan)
  return found
}

// CI's server runs without autovacuum, so a test database is never analyzed; a backlog analyzed
// while all due is the other way estimates mislead. Either way, taking the window's first deliveries
// must not read the backlog: the due index walked in order up to the window, nothing sorted below it,
// with the open circuits, if any, a list to look each delivery up in.
t.test('PostgreSQL: a delivery claim walks the due index to its window, on a backlog of 20,000 due, analyzed or not, circuits open or not', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, other } = await emptyPgStore(t)
  await other.query(`INSERT INTO webhook_endpoints (id, url, events, description, secret, created_at)
    SELECT id, 'http://127.0.0.1:9/', '["order.completed"]', '', 'whsec_test', 0 FROM unnest(ARRAY['ep_a', 'ep_b']) AS id`)
  await other.query(`${INSERT_DELIVERIES} SELECT 'msg_' || i, CASE WHEN i % 2 = 0 THEN 'ep_a' ELSE 'ep_b' END, 'o' || i,
    'order.completed', '{}', 'pending', i, i, i FROM generate_series(1, 20000) AS i`)
  for (const [analyzed, open] of [[false, false], [false, true], [true, true]]) {
    if (analyzed) await other.query('ANALYZE webhook_deliveries')
    await other.query(`UPDATE webhook_endpoints SET circuit_open_until = ${open ? 'extract(epoch FROM now()) * 1000 + 3600000' : 'NULL'} WHERE id = 'ep_b'`)
    const call: IndexedCall = ['claimDeliveries', 200, 0, 30_000]
    const plan = await store.explain(...call)
    const what = `${analyzed ? 'analyzed' : 'no statistics'}, ${open ? "ep_b's circuit open" : 'circuits closed'}: ${describe(call)}`
    const { scans } = scansOf(plan, 'webhook_deliveries')
    t.notOk(scans.some((s) => /Seq Scan|Bitmap/.test(s['Node Type'])), `${what}: no sequential or bitmap scan`)
    const due = scans.find((s) => s['Index Name'] === 'webhook_deliveries_due')
    t.match(due, { 'Node Type': 'Index Scan', 'Scan Direction': 'Forward' }, `${what}: walks webhook_deliveries_due in order`)
    t.match(due?.Filter ?? '', OPEN_CIRCUITS_FILTER, `${what}: passes over the open circuits' deliveries by a list`)
    t.equal((due?.Filter ?? '').includes("'{ep_b}'"), open, `${what}: the list names the open circuits`)
    const limits = limitsOver(plan, 'webhook_deliveries_due')
    t.equal(limits.length, 1, `${what}: one limit over the walk`)
    t.notOk(limits.some((limit) => scansOf(limit, 'webhook_deliveries').sorts), `${what}: nothing sorted below the window's limit`)
  }
})

// A backlog that no ANALYZE has seen (CI's server; any backlog younger than autovacuum's next
// look), half of it processed before, so that the claimable and Processing ranges of the indexes
// hold the dead entries of the orders that went through them. The processing loop's statements
// must still walk their index or look each order up by its id, not read the backlog.
t.test('PostgreSQL: the processing loop, lists by customer, and retention and erasure batches walk their indexes on a backlog of 100,000 without statistics, half of it processed', { skip: SKIP_POSTGRES }, async (t) => {
  const { store, other } = await emptyPgStore(t)
  await other.query(`${INSERT} SELECT 'o' || i, i % 1000, '[1,2,3]', 100, 'Pending', i, i, i FROM generate_series(1, 100000) AS i`)
  await other.query("UPDATE orders SET status = 'Processing', claim_token = 'old', lease_until = 0 WHERE seq <= 50000")
  await other.query("UPDATE orders SET status = 'Completed', claim_token = NULL, lease_until = NULL WHERE seq <= 49000")
  const reads = (plan: PlanNode, what: string) => {
    const { scans, sorts } = scansOf(plan)
    t.notOk(scans.some((s) => /Seq Scan|Bitmap/.test(s['Node Type'])), `${what}: no sequential or bitmap scan of orders`)
    t.notOk(sorts, `${what}: nothing sorted`)
    return scans
  }
  const claim = reads(await store.explain('claim', 1000, 100_000, 30_000), 'claim')
  t.match(claim.find((s) => s['Index Name'] === 'orders_claimable'), { 'Node Type': 'Index Scan', 'Scan Direction': 'Forward' }, 'a claim walks orders_claimable in order')
  // An index-only scan does not mark the dead entries it passes: every call visited their rows again.
  t.match(reads(await store.explain('nextAvailableAt'), 'nextAvailableAt'), [{ 'Node Type': 'Index Scan', 'Index Name': 'orders_claimable' }], 'the next claimable order: the first live entry of orders_claimable')

  // Beside the loop, on the same backlog: a customer's orders, of every status or of one (each
  // status's range read up to the limit, no incremental sort of a status's orders below it), and
  // each retention and erasure batch.
  for (const query of [{ userId: 7, limit: 100 }, { userId: 7, limit: 100, order: 'desc' }, { status: 'Completed', userId: 7, limit: 100 }] as ListQuery[]) {
    const plan = await store.explain('list', query)
    const { scans } = scansOf(plan)
    t.ok(scans.length > 0 && scans.every((s) => s['Index Name'] === 'orders_by_status_user'), `${describe(['list', query])}: reads orders_by_status_user only`)
    if (query.status === undefined) t.ok(scansUnderTheirLimit(plan, 'orders_by_status_user'), `${describe(['list', query])}: each range read up to the limit, nothing sorted below it`)
    else reads(plan, describe(['list', query]))
  }
  // A page of a customer with 100 orders, 50 of them Pending, as the store reads it: its ranges end
  // where the customer's orders do. Bounded by (status, user_id), each read on through the rest of
  // its status: 1,475 buffers.
  for (const query of [{ userId: 7, limit: 100 }, { userId: 7, limit: 100, order: 'desc' }, { status: 'Pending', userId: 7, limit: 100 }, { status: 'Pending', userId: 7, limit: 100, order: 'desc' }] as ListQuery[]) {
    const { text, values } = listQuery(query)
    await other.query(BEGIN_INDEX_WALKS)
    const { rows } = await other.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode & { 'Shared Hit Blocks': number, 'Shared Read Blocks': number } }> }>(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values)
    const { 'Shared Hit Blocks': hit, 'Shared Read Blocks': read } = rows[0]!['QUERY PLAN'][0]!.Plan
    await other.query('ROLLBACK')
    t.ok(hit + read < 300, `${describe(['list', query])}: ${hit + read} buffers for a page of at most 100 orders`)
  }
  const batches: Array<[IndexedCall, string]> = [
    [['sweepOrders', 'Completed', 100_000, 1000], 'orders_finished'],
    [['deleteUserOrders', 7, 1000], 'orders_by_status_user']
  ]
  for (const [call, index] of batches) {
    const plan = await store.explain(...call)
    reads(plan, describe(call))
    t.ok(scansUnderTheirLimit(plan, index), `${describe(call)}: reads ${index} up to the batch`)
  }

  // A settle, a hand-back, a renewal of 1,000 claims and a recovery, planned as the store runs them.
  const ids = Array.from({ length: 1000 }, (_, i) => `o${49_001 + i}`)
  const tokens = ids.map(() => 'old')
  await other.query(BEGIN_INDEX_WALKS)
  const statements: Array<[string, string, unknown[]]> = [
    ['complete', PG_SQL.complete, [0, ids, tokens, ids.map(() => null)]],
    ['retry', PG_SQL.retry, [0, ids, tokens, ids.map(() => 0), ids.map(() => 'x')]],
    ['fail', PG_SQL.fail, [0, ids, tokens, ids.map(() => 'x')]],
    ['release', PG_SQL.release, [0, ids, tokens]],
    ['extendLeases', PG_SQL.extendLeases, [30_000, ids, tokens]],
    ['failExpired', PG_SQL.failExpired, [0, 3, ['held']]],
    ['retryExpired', PG_SQL.retryExpired, [0, ['held']]]
  ]
  for (const [name, text, values] of statements) {
    const { rows } = await other.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (FORMAT JSON) ${text}`, values)
    const plan = rows[0]!['QUERY PLAN'][0]!.Plan
    const scans = reads(plan, name)
    const joins: string[] = []
    const visit = (node: PlanNode) => { if (/Hash Join|Merge Join/.test(node['Node Type'])) joins.push(node['Node Type']); node.Plans?.forEach(visit) }
    visit(plan)
    t.same(joins, [], `${name}: no hash or merge join`)
    const expected = name.endsWith('Expired') ? 'orders_by_status' : 'orders_order_id_key'
    t.ok(scans.some((s) => s['Index Name'] === expected), `${name}: reads ${expected}`)
  }
  await other.query('ROLLBACK')

  // ...and the store sends them so: each transaction of the loop begins with the settings.
  const pool = (store as unknown as { pool: pg.Pool }).pool
  const firsts: string[] = []
  const acquired = new WeakSet<pg.PoolClient>()
  const wrapped = new WeakSet<pg.PoolClient>()
  pool.on('acquire', (client) => {
    acquired.add(client)
    if (wrapped.has(client)) return
    wrapped.add(client)
    const query = client.query.bind(client) as (...args: unknown[]) => unknown
    Object.assign(client, {
      query: (config: string | { text: string }, ...rest: unknown[]) => {
        if (acquired.delete(client)) firsts.push(typeof config === 'string' ? config : config.text)
        return query(config, ...rest)
      }
    })
  })
  const sends = async (what: string, call: () => Promise<unknown>) => {
    firsts.length = 0
    await call()
    t.ok(firsts.length > 0 && firsts.every((first) => first.startsWith(BEGIN_INDEX_WALKS)), `${what}: begins with the loop's settings`)
  }
  const now = Date.now()
  const claims = await store.claim(2, now, 30_000)
  t.equal(claims.length, 2, 'two orders claimed')
  await sends('claim', () => store.claim(1, now, 30_000))
  await sends('extendLeases', () => store.extendLeases(claims, now, 30_000))
  await sends('settle', () => store.settle([{ claim: claims[0]!, ok: true }], now))
  await sends('release', () => store.release([claims[1]!], now))
  await sends('recoverExpired', () => store.recoverExpired(now, 3, []))
  await sends('nextAvailableAt', () => store.nextAvailableAt())
  await sends('list', () => store.list({ userId: 7, limit: 10 }))
  await sends('claimDeliveries', () => store.claimDeliveries(10, now, 30_000))
  await sends('sweepOrders', () => store.sweepOrders('Completed', 1, 10))
  await sends('sweepDeliveries', () => store.sweepDeliveries(1, 10))
  await store.requestErasure(7, now)
  await sends('deleteUserOrders', () => store.deleteUserOrders(7, 10))
})
