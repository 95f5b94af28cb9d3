import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import type { NewOrder, OrderRecord, OrderStatus } from './order.ts'
import { sameOrder, toCents } from './order.ts'
import { migrate } from './sqlite-migrations.ts'
import { StatsDelta, statsFromRows } from './stats-delta.ts'
import type {
  CancelResult, Claim, CreateResult, ListQuery, OrderPage, OrderStats, OrderStore, Outcome, WorkListener
} from './store.ts'
import { WorkListeners } from './work-listeners.ts'

interface OrderRow extends Omit<OrderRecord, 'item_ids'> { item_ids: string }

const ORDER_COLUMNS = `seq, order_id, user_id, item_ids, total_cents, status, created_at,
  processing_started_at, completed_at, updated_at, attempts, last_error`

function toRecord (row: OrderRow): OrderRecord {
  return { ...row, item_ids: JSON.parse(row.item_ids) as number[] }
}

/** The embedded store: one SQLite file (WAL) or `:memory:`, used by one process. */
export class SqliteStore implements OrderStore {
  private readonly db: Database.Database
  private readonly listeners = new WorkListeners()
  private readonly sql
  private readonly createTx: SqliteStore['createSync']
  private readonly createManyTx: SqliteStore['createManySync']
  private readonly cancelTx: SqliteStore['cancelSync']
  private readonly claimTx: SqliteStore['claimSync']
  private readonly settleTx: SqliteStore['settleSync']
  private readonly releaseTx: SqliteStore['releaseSync']
  private readonly recoverTx: SqliteStore['recoverSync']

  constructor (path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    // WAL with synchronous=NORMAL survives a process crash; only an OS crash can lose the last commits.
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('busy_timeout = 5000')
    migrate(this.db)
    const db = this.db
    this.sql = {
      insert: db.prepare(`INSERT INTO orders
        (order_id, user_id, item_ids, total_cents, status, created_at, available_at, updated_at)
        VALUES (?, ?, ?, ?, 'Pending', ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`),
      get: db.prepare(`SELECT ${ORDER_COLUMNS} FROM orders WHERE order_id = ?`),
      addStat: db.prepare('UPDATE order_stats SET value = value + ? WHERE name = ?'),
      stats: db.prepare('SELECT name, value FROM order_stats'),
      cancel: db.prepare(`UPDATE orders SET status = 'Cancelled', updated_at = ?
        WHERE order_id = ? AND status = 'Pending' RETURNING ${ORDER_COLUMNS}`),
      claim: db.prepare(`UPDATE orders SET status = 'Processing', claim_token = ?, lease_until = ?,
          attempts = attempts + 1, processing_started_at = COALESCE(processing_started_at, ?), updated_at = ?
        WHERE seq IN (SELECT seq FROM orders WHERE status = 'Pending' AND available_at <= ?
          ORDER BY available_at, seq LIMIT ?)
        RETURNING order_id, attempts, created_at, processing_started_at`),
      complete: db.prepare(`UPDATE orders SET status = 'Completed', completed_at = ?, updated_at = ?,
          claim_token = NULL, lease_until = NULL, last_error = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'
        RETURNING created_at, processing_started_at, completed_at`),
      retry: db.prepare(`UPDATE orders SET status = 'Pending', available_at = ?, updated_at = ?,
          last_error = ?, claim_token = NULL, lease_until = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'`),
      fail: db.prepare(`UPDATE orders SET status = 'Failed', updated_at = ?, last_error = ?,
          claim_token = NULL, lease_until = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'`),
      release: db.prepare(`UPDATE orders SET status = 'Pending', available_at = ?, updated_at = ?,
          claim_token = NULL, lease_until = NULL
        WHERE order_id = ? AND claim_token = ? AND status = 'Processing'`),
      failExpired: db.prepare(`UPDATE orders SET status = 'Failed', updated_at = ?,
          last_error = 'lease expired on the last attempt', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < ? AND attempts >= ?`),
      retryExpired: db.prepare(`UPDATE orders SET status = 'Pending', available_at = ?, updated_at = ?,
          last_error = 'lease expired', claim_token = NULL, lease_until = NULL
        WHERE status = 'Processing' AND lease_until < ?`),
      nextAvailable: db.prepare("SELECT MIN(available_at) AS at FROM orders WHERE status = 'Pending'").pluck(),
      nextLeaseEnd: db.prepare("SELECT MIN(lease_until) AS at FROM orders WHERE status = 'Processing'").pluck(),
      idsByStatus: db.prepare('SELECT order_id FROM orders WHERE status = ? ORDER BY seq LIMIT ?').pluck(),
      reserveBatch: db.prepare(`INSERT INTO populate_batches (batch_id, total_entries, created_at)
        VALUES (?, ?, ?) ON CONFLICT (batch_id) DO NOTHING`),
      ping: db.prepare('SELECT 1').pluck()
    }
    this.createTx = db.transaction(this.createSync.bind(this))
    this.createManyTx = db.transaction(this.createManySync.bind(this))
    this.cancelTx = db.transaction(this.cancelSync.bind(this))
    this.claimTx = db.transaction(this.claimSync.bind(this))
    this.settleTx = db.transaction(this.settleSync.bind(this))
    this.releaseTx = db.transaction(this.releaseSync.bind(this))
    this.recoverTx = db.transaction(this.recoverSync.bind(this))
  }

  private apply (delta: StatsDelta): void {
    for (const [name, amount] of delta.changes) this.sql.addStat.run(amount, name)
  }

  private insert (order: NewOrder, now: number, availableAt: number): boolean {
    return this.sql.insert.run(order.order_id, order.user_id, JSON.stringify(order.item_ids),
      toCents(order.total_amount), now, availableAt, now).changes === 1
  }

  private createSync (order: NewOrder, now: number, availableAt: number): CreateResult {
    if (this.insert(order, now, availableAt)) {
      this.apply(new StatsDelta().add('Pending', 1))
      return 'created'
    }
    const existing = this.getSync(order.order_id) as OrderRecord
    return sameOrder(existing, order) ? 'exists' : 'conflict'
  }

  async create (order: NewOrder, now: number, availableAt: number): Promise<CreateResult> {
    const result = this.createTx(order, now, availableAt)
    if (result === 'created') this.listeners.emit(availableAt)
    return result
  }

  private createManySync (orders: NewOrder[], now: number, availableAt: number): string[] {
    const existing = orders.filter((order) => !this.insert(order, now, availableAt)).map((order) => order.order_id)
    this.apply(new StatsDelta().add('Pending', orders.length - existing.length))
    return existing
  }

  async createMany (orders: NewOrder[], now: number, availableAt: number): Promise<string[]> {
    const existing = this.createManyTx(orders, now, availableAt)
    if (existing.length < orders.length) this.listeners.emit(availableAt)
    return existing
  }

  private getSync (orderId: string): OrderRecord | undefined {
    const row = this.sql.get.get(orderId) as OrderRow | undefined
    return row && toRecord(row)
  }

  async get (orderId: string): Promise<OrderRecord | undefined> {
    return this.getSync(orderId)
  }

  async list ({ status, userId, limit, after = 0 }: ListQuery): Promise<OrderPage> {
    const where = ['seq > ?']
    const params: Array<string | number> = [after]
    if (status !== undefined) { where.push('status = ?'); params.push(status) }
    if (userId !== undefined) { where.push('user_id = ?'); params.push(userId) }
    const rows = this.db.prepare(`SELECT ${ORDER_COLUMNS} FROM orders WHERE ${where.join(' AND ')}
      ORDER BY seq LIMIT ?`).all(...params, limit + 1) as OrderRow[]
    const more = rows.length > limit
    const orders = rows.slice(0, limit).map(toRecord)
    return { orders, lastSeq: more ? (orders.at(-1) as OrderRecord).seq : null }
  }

  private cancelSync (orderId: string, now: number): CancelResult {
    const row = this.sql.cancel.get(now, orderId) as OrderRow | undefined
    if (!row) return { cancelled: false, order: this.getSync(orderId) }
    this.apply(new StatsDelta().move('Pending', 'Cancelled'))
    return { cancelled: true, order: toRecord(row) }
  }

  async cancel (orderId: string, now: number): Promise<CancelResult> {
    return this.cancelTx(orderId, now)
  }

  private claimSync (limit: number, now: number, leaseUntil: number): Claim[] {
    const token = randomUUID()
    const rows = this.sql.claim.all(token, leaseUntil, now, now, now, limit) as Array<{
      order_id: string, attempts: number, created_at: number, processing_started_at: number
    }>
    const delta = new StatsDelta().move('Pending', 'Processing', rows.length)
    for (const row of rows) {
      if (row.attempts === 1) delta.started(row.created_at, row.processing_started_at)
    }
    this.apply(delta)
    return rows.map((row) => ({ order_id: row.order_id, token, attempts: row.attempts }))
  }

  async claim (limit: number, now: number, leaseUntil: number): Promise<Claim[]> {
    return this.claimTx(limit, now, leaseUntil)
  }

  private settleSync (outcomes: Outcome[], now: number): number {
    const delta = new StatsDelta()
    let applied = 0
    for (const outcome of outcomes) {
      const { order_id: orderId, token } = outcome.claim
      if (outcome.ok) {
        const done = this.sql.complete.get(now, now, orderId, token) as OrderRecord | undefined
        if (done) { delta.completed(done); applied++ }
      } else if (outcome.retryAt !== null) {
        if (this.sql.retry.run(outcome.retryAt, now, outcome.error, orderId, token).changes === 1) {
          delta.move('Processing', 'Pending'); applied++
        }
      } else if (this.sql.fail.run(now, outcome.error, orderId, token).changes === 1) {
        delta.move('Processing', 'Failed'); applied++
      }
    }
    this.apply(delta)
    return applied
  }

  async settle (outcomes: Outcome[], now: number): Promise<number> {
    const applied = this.settleTx(outcomes, now)
    const retryAt = outcomes.reduce((at, o) => (!o.ok && o.retryAt !== null ? Math.min(at, o.retryAt) : at), Infinity)
    if (retryAt !== Infinity) this.listeners.emit(retryAt)
    return applied
  }

  private releaseSync (claims: Claim[], now: number): number {
    const released = claims.filter((claim) => this.sql.release.run(now, now, claim.order_id, claim.token).changes === 1).length
    this.apply(new StatsDelta().move('Processing', 'Pending', released))
    return released
  }

  async release (claims: Claim[], now: number): Promise<number> {
    const released = this.releaseTx(claims, now)
    if (released > 0) this.listeners.emit(now)
    return released
  }

  private recoverSync (now: number, maxAttempts: number): number {
    const failed = this.sql.failExpired.run(now, now, maxAttempts).changes
    const retried = this.sql.retryExpired.run(now, now, now).changes
    this.apply(new StatsDelta().move('Processing', 'Failed', failed).move('Processing', 'Pending', retried))
    return failed + retried
  }

  async recoverExpired (now: number, maxAttempts: number): Promise<number> {
    const recovered = this.recoverTx(now, maxAttempts)
    if (recovered > 0) this.listeners.emit(now)
    return recovered
  }

  async nextWakeAt (): Promise<number | null> {
    const times = [this.sql.nextAvailable.get(), this.sql.nextLeaseEnd.get()].filter((at) => at !== null) as number[]
    return times.length > 0 ? Math.min(...times) : null
  }

  async stats (): Promise<OrderStats> {
    return statsFromRows(this.sql.stats.all() as Array<{ name: string, value: number }>)
  }

  async idsByStatus (status: OrderStatus, limit: number): Promise<string[]> {
    return this.sql.idsByStatus.all(status, limit) as string[]
  }

  async reserveBatch (batchId: string, totalEntries: number, now: number): Promise<boolean> {
    return this.sql.reserveBatch.run(batchId, totalEntries, now).changes === 1
  }

  async ping (): Promise<void> {
    this.sql.ping.get()
  }

  onWork (listener: WorkListener): () => void {
    return this.listeners.add(listener)
  }

  async close (): Promise<void> {
    if (this.db.open) this.db.close()
  }

}
