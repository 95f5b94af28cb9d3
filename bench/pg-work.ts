import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { waitFor } from '../test/helper.ts'
import { cpuMs } from './process-facts.ts'

/**
 * What PostgreSQL did for one run of a queue (the service or a peer) on a database of its own:
 * figures that do not move with how busy the machine is, so that a design can be steered by them
 * on a shared machine. Everything is for that database alone, although other databases of the
 * same server may be busy meanwhile: its WAL is its records (pg_walinspect), not the server's
 * LSN difference, and its transactions and rows come from its own statistics.
 */
export interface PgWork {
  /** WAL records of the database's relations and of its transactions (their commits), with their full-page images. */
  walBytes: number
  /** Of which full-page images: the first change of a page after a checkpoint logs the whole page, so they depend on when checkpoints fall. */
  fpiBytes: number
  /** Commits and rollbacks (pg_stat_database). */
  transactions: number
  /** Rows of its tables (pg_stat_user_tables); `hotUpdated` of `updated` rewrote no index. */
  inserted: number
  updated: number
  hotUpdated: number
  deleted: number
  /** CPU time of the queue's Node process and of the PostgreSQL backends serving the database, /proc's utime + stime. */
  nodeCpuMs: number
  backendCpuMs: number
  /** From the start to the stop of the count. */
  wallMs: number
}

/** How often the backends serving the database are looked for: one that exits in between takes its CPU time with it. */
const SAMPLE_EVERY_MS = 200
/**
 * A backend reports its statistics when it has been idle, at most once a second (PostgreSQL 15's
 * PGSTAT_MIN_INTERVAL): those of the queue's start-up are reported within this, before counting.
 */
const STATS_SETTLE_MS = 1200

interface Counters { lsn: string, transactions: number, inserted: number, updated: number, hotUpdated: number, deleted: number }

const TABLE_ROWS = `SELECT COALESCE(SUM(n_tup_ins), 0)::float8 AS inserted, COALESCE(SUM(n_tup_upd), 0)::float8 AS updated,
  COALESCE(SUM(n_tup_hot_upd), 0)::float8 AS "hotUpdated", COALESCE(SUM(n_tup_del), 0)::float8 AS deleted FROM pg_stat_user_tables`

/** Reads `sql` in a session of its own on `url`, ended at once (its own statistics are reported as it ends). */
async function readOnce<T extends pg.QueryResultRow> (url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(sql, values)).rows
  } finally {
    await client.end()
  }
}

/**
 * Counts what PostgreSQL does for the queue whose Node process is `nodePid`, on `databaseUrl`,
 * from `start` (the queue started and idle) to `stop` (its work done, its process still running);
 * `finish`, once the process has exited and its backends with it, returns the figures.
 */
export class PgWorkMeter {
  private readonly backends = new Map<number, { first: number, last: number }>()
  private sampler: NodeJS.Timeout | undefined
  private nodeCpuMs = 0
  private readonly startedAt = performance.now()
  private wallMs = 0
  /** Transactions of the harness's own (its polls of the queue's progress), taken out of the count. */
  harnessTransactions = 0
  private sampling: Promise<void> = Promise.resolve()

  private constructor (
    private readonly admin: pg.Client,
    private readonly databaseUrl: string,
    private readonly database: string,
    private readonly nodePid: number,
    private readonly before: Counters,
    private readonly nodeCpuBefore: number
  ) {}

  /** `serverUrl`: another database of the same server, where the meter's own session runs (its work is not counted). */
  static async start (serverUrl: string, databaseUrl: string, nodePid: number): Promise<PgWorkMeter> {
    const database = new URL(databaseUrl).pathname.slice(1)
    const admin = new pg.Client({ connectionString: serverUrl })
    await admin.connect()
    // A temporary slot keeps the run's WAL until it is read (a checkpoint could recycle it); it goes with the session.
    await admin.query('SELECT pg_create_physical_replication_slot($1, true, true)', [`bench_${randomBytes(6).toString('hex')}`])
    await sleep(STATS_SETTLE_MS)
    const before = await PgWorkMeter.counters(admin, databaseUrl, database)
    const meter = new PgWorkMeter(admin, databaseUrl, database, nodePid, before, cpuMs(nodePid))
    await meter.sample(true)
    meter.sampler = setInterval(() => { meter.sampling = meter.sampling.then(() => meter.sample()) }, SAMPLE_EVERY_MS)
    return meter
  }

  private static async counters (admin: pg.Client, databaseUrl: string, database: string): Promise<Counters> {
    await admin.query('SELECT pg_stat_clear_snapshot()')
    const { rows: [server] } = await admin.query<{ lsn: string, transactions: number }>(
      `SELECT pg_current_wal_lsn()::text AS lsn, (xact_commit + xact_rollback)::float8 AS transactions
       FROM pg_stat_database WHERE datname = $1`, [database])
    const [tables] = await readOnce<Omit<Counters, 'lsn' | 'transactions'>>(databaseUrl, TABLE_ROWS)
    return { ...server!, ...tables! }
  }

  /** Notes the CPU time of each backend serving the database now; `atStart`: what each had used before the run. */
  private async sample (atStart = false): Promise<void> {
    const { rows } = await this.admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [this.database])
    for (const { pid } of rows) {
      const now = cpuMs(pid)
      if (now === 0) continue
      const seen = this.backends.get(pid)
      // A backend first seen later started during the run (a new pooled connection): all its time counts.
      if (seen) seen.last = now
      else this.backends.set(pid, { first: atStart ? now : 0, last: now })
    }
  }

  /** The queue's work is done: CPU times are read while its process and backends still run. */
  async stop (): Promise<void> {
    clearInterval(this.sampler)
    await this.sampling
    await this.sample()
    this.nodeCpuMs = cpuMs(this.nodePid) - this.nodeCpuBefore
    this.wallMs = performance.now() - this.startedAt
  }

  /** Once the queue's process has exited: waits for its backends to end (reporting their statistics), then counts. */
  async finish (): Promise<PgWork> {
    try {
      await waitFor(async () => (await this.admin.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [this.database])).rows[0]!.n === 0,
      'the backends of the run to end', 30_000)
      const after = await PgWorkMeter.counters(this.admin, this.databaseUrl, this.database)
      const [wal] = await readOnce<{ bytes: number, fpi: number }>(this.databaseUrl, `
        WITH records AS (SELECT xid, record_length, fpi_length, block_ref FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)),
          ours AS (SELECT DISTINCT xid FROM records WHERE block_ref LIKE $3 AND xid <> '0')
        SELECT COALESCE(SUM(record_length), 0)::float8 AS bytes, COALESCE(SUM(fpi_length), 0)::float8 AS fpi FROM records
        WHERE block_ref LIKE $3 OR xid IN (SELECT xid FROM ours)`,
      [this.before.lsn, after.lsn, `%/${await this.databaseOid()}/%`])
      const backendCpuMs = [...this.backends.values()].reduce((sum, { first, last }) => sum + last - first, 0)
      return {
        walBytes: wal!.bytes,
        fpiBytes: wal!.fpi,
        transactions: after.transactions - this.before.transactions - this.harnessTransactions,
        inserted: after.inserted - this.before.inserted,
        updated: after.updated - this.before.updated,
        hotUpdated: after.hotUpdated - this.before.hotUpdated,
        deleted: after.deleted - this.before.deleted,
        nodeCpuMs: this.nodeCpuMs,
        backendCpuMs,
        wallMs: this.wallMs
      }
    } finally {
      await this.admin.end()
    }
  }

  private async databaseOid (): Promise<number> {
    // pg_walinspect reads the server's WAL from any database: installed in the run's own, after its counters were read.
    await readOnce(this.databaseUrl, 'CREATE EXTENSION IF NOT EXISTS pg_walinspect')
    const { rows: [row] } = await this.admin.query<{ oid: number }>('SELECT oid::int AS oid FROM pg_database WHERE datname = $1', [this.database])
    return row!.oid
  }
}

/** Each figure per 1,000 orders or jobs. */
export function perThousand (work: PgWork, units: number): PgWork {
  return Object.fromEntries(Object.entries(work).map(([name, value]) => [name, value * 1000 / units])) as unknown as PgWork
}
