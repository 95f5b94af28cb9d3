import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import type { OrderRecord } from '../../order.ts'
import type { DeleteReason } from '../order-store.ts'
import type { DeletedRow, Transitions } from '../transitions.ts'
import type { ChangedDelivery } from '../delivery-transitions.ts'
import { WebhookSubscriptions } from '../webhook-events.ts'
import {
  attemptsUnderWay, CLAIM_WINDOW, circuitChanges, countsByEndpoint, noDeliveries, roomOf, type CircuitPolicy, type DeliveryClaim, type DeliveryOutcome, type DeliveryPage, type DeliveryQuery, type DeliveryRecord,
  type DeliveryStatus, type EndpointCap, type EndpointRecord, type ErasedDelivery, type NewDelivery, type NewEndpoint, type WebhookEvent
} from '../webhook-store.ts'
import { SQL } from './statements.ts'

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>
type EndpointRow = Omit<EndpointRecord, 'counts'>
type SettledRow = ChangedDelivery & { seq: number, order_id: string | null }
type FailedRow = SettledRow & { last_error: string }
type ClaimedRow = Omit<DeliveryClaim, 'token' | 'target'> & { url: string | null, secret: string | null }

/**
 * The webhook half of the PostgreSQL store: endpoints, and the deliveries recorded with each
 * status change. Writes run in the store's transactions (`tx`), with their Transitions.
 */
export class PgWebhooks {
  readonly subscriptions = new WebhookSubscriptions()
  private reloading: Promise<void> | null = null
  private reloadAgain = false

  /** `shard`: picks the counter shard a transaction writes, as for the order aggregates. */
  constructor (private readonly pool: pg.Pool, private readonly shard: () => number) {}

  /**
   * Reads which endpoints want which statuses: at start, after this process changed endpoints, and
   * when another announces it did. Reloads asked for meanwhile run once more after, so the last read wins.
   */
  async reload (): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true
      return this.reloading
    }
    this.reloading = (async () => {
      try {
        do {
          this.reloadAgain = false
          const { rows } = await this.pool.query<{ id: string, events: WebhookEvent[] }>(SQL.subscriptions)
          this.subscriptions.load(rows)
        } while (this.reloadAgain)
      } finally {
        this.reloading = null
      }
    })()
    return this.reloading
  }

  /**
   * Records the deliveries of the transaction's status changes that endpoints want, then its
   * delivery counts. A transaction here is one store call, which changes an order once: the order
   * read at its end is the order as of its change.
   */
  async finish (tx: pg.PoolClient, transitions: Transitions, now: number): Promise<void> {
    const changes = this.subscriptions.wanted(transitions.log.changes)
    if (changes.length > 0) {
      const ids = [...new Set(changes.map((change) => change.order_id))]
      const { rows } = await tx.query<OrderRecord>(SQL.existing, [ids])
      const orders = new Map(rows.map((order) => [order.order_id, order]))
      await this.insert(tx, transitions, this.subscriptions.deliveries(changes, orders), now)
    }
    const entries = transitions.deliveries.entries()
    if (entries.length > 0) {
      await tx.query(SQL.addDeliveryCount, [this.shard(), entries.map(([id]) => id), entries.map(([, name]) => name), entries.map(([, , value]) => value)])
    }
  }

  /** Records the order.deleted deliveries of these deleted orders that endpoints want, in their transaction. */
  /**
   * Records the order.deleted deliveries of these deleted orders that endpoints want; one waits for
   * an attempt of its order under way to its endpoint (deleted by an erasure), so as not to overtake it.
   */
  async recordDeletions (tx: pg.PoolClient, transitions: Transitions, rows: readonly DeletedRow[], reason: DeleteReason, now: number,
    erased: readonly ErasedDelivery[] = []): Promise<void> {
    await this.insert(tx, transitions, this.subscriptions.deletions(rows, reason, now), now)
    const underWay = attemptsUnderWay(erased)
    if (underWay.length > 0) {
      await tx.query(SQL.holdDeletions, [underWay.map((a) => a.endpoint_id), underWay.map((a) => a.order_id), underWay.map((a) => a.leased_until)])
    }
  }

  private async insert (tx: pg.PoolClient, transitions: Transitions, deliveries: NewDelivery[], now: number): Promise<void> {
    if (deliveries.length === 0) return
    const column = <K extends keyof NewDelivery>(key: K) => deliveries.map((d) => d[key])
    await tx.query(SQL.insertDelivery, [now, column('id'), column('endpoint_id'), column('order_id'), column('event_type'), column('payload'), column('created_at')])
    transitions.deliveries.queued(deliveries)
  }

  async createEndpoint (tx: pg.PoolClient, transitions: Transitions, endpoint: NewEndpoint, now: number, maxEndpoints: number): Promise<EndpointRecord | null> {
    await tx.query(SQL.lockEndpoints)
    const { rows } = await tx.query<{ n: number }>(SQL.countEndpoints)
    if ((rows[0] as { n: number }).n >= maxEndpoints) return null
    await tx.query(SQL.insertEndpoint, [endpoint.id, endpoint.url, JSON.stringify(endpoint.events), endpoint.description, endpoint.secret, now])
    transitions.deliveries.endpointsChanged = true
    return { ...endpoint, created_at: now, counts: noDeliveries(), last_error: null, last_error_at: null, consecutive_failures: 0, circuit_open_until: null }
  }

  async endpoints (): Promise<EndpointRecord[]> {
    return this.withCounts((await this.pool.query<EndpointRow>(SQL.endpoints)).rows)
  }

  async endpoint (id: string): Promise<EndpointRecord | undefined> {
    const { rows } = await this.pool.query<EndpointRow>(SQL.endpoint, [id])
    return rows.length === 0 ? undefined : (await this.withCounts(rows))[0]
  }

  private async withCounts (rows: EndpointRow[]): Promise<EndpointRecord[]> {
    const { rows: stats } = await this.pool.query<{ endpoint_id: string, name: DeliveryStatus, value: number }>(SQL.endpointCounts)
    const countsOf = countsByEndpoint(stats)
    return rows.map((row) => ({ ...row, counts: countsOf(row.id) }))
  }

  /**
   * Its deliveries are left to purge: deleting 250,000 in the delete outlasted DATABASE_TIMEOUT_MS,
   * and taking the endpoint's row before its deliveries' deadlocked with a settle, which takes them
   * the other way round. Locks here: the endpoint, then its counts, as a settle takes them.
   */
  async deleteEndpoint (tx: pg.PoolClient, transitions: Transitions, id: string, now: number): Promise<boolean> {
    if ((await tx.query(SQL.deleteEndpoint, [id])).rowCount === 0) return false
    await tx.query(SQL.deleteEndpointCounts, [id])
    await tx.query(SQL.insertPurge, [id, now])
    transitions.deliveries.endpointsChanged = true
    return true
  }

  /**
   * Deletes up to `limit` deliveries of the oldest deleted endpoint no other process is purging;
   * once none is left, forgets it, with the counts a settle may have written for it since. Takes
   * only deliveries no settle holds, then counts, as a settle does. False when there is nothing to purge.
   */
  async purge (tx: pg.PoolClient, limit: number): Promise<boolean> {
    const [next] = (await tx.query<{ endpoint_id: string }>(SQL.nextPurge)).rows
    if (!next) return false
    const { rowCount } = await tx.query(SQL.purgeDeliveries, [next.endpoint_id, limit])
    if ((rowCount ?? 0) < limit && !(await tx.query<{ found: boolean }>(SQL.anyDelivery, [next.endpoint_id])).rows[0]?.found) {
      await tx.query(SQL.deleteEndpointCounts, [next.endpoint_id])
      await tx.query(SQL.endPurge, [next.endpoint_id])
    }
    return true
  }

  private async exists (tx: Queryable, endpointId: string): Promise<boolean> {
    return (await tx.query(SQL.endpoint, [endpointId])).rows.length > 0
  }

  async queue (tx: pg.PoolClient, transitions: Transitions, delivery: NewDelivery, now: number): Promise<boolean> {
    if (!await this.exists(tx, delivery.endpoint_id)) return false
    await this.insert(tx, transitions, [delivery], now)
    return true
  }

  async redeliver (tx: pg.PoolClient, transitions: Transitions, endpointId: string, now: number): Promise<number | undefined> {
    if (!await this.exists(tx, endpointId)) return undefined
    const count = (await tx.query(SQL.redeliver, [endpointId, now])).rowCount ?? 0
    transitions.deliveries.redelivered(endpointId, count)
    return count
  }

  async deliveries (endpointId: string, query: DeliveryQuery): Promise<DeliveryPage> {
    const { text, values } = deliveriesQuery(endpointId, query)
    const { rows } = await this.pool.query<DeliveryRecord>(text, values)
    const deliveries = rows.slice(0, query.limit)
    return { deliveries, lastSeq: rows.length > query.limit ? (deliveries.at(-1) as DeliveryRecord).seq : null }
  }

  async claim (tx: pg.PoolClient, limit: number, leaseMs: number, cap?: EndpointCap): Promise<DeliveryClaim[]> {
    const token = randomUUID()
    const { rows } = await tx.query<ClaimedRow>(await claimDeliveriesQuery(tx, limit, leaseMs, token, cap))
    return rows.map(({ url, secret, ...row }) => ({ ...row, token, target: url === null || secret === null ? null : { url, secret } }))
  }

  async settle (tx: pg.PoolClient, transitions: Transitions, outcomes: DeliveryOutcome[], now: number, circuit: CircuitPolicy): Promise<number> {
    const of = <K extends DeliveryOutcome['kind']>(kind: K) => outcomes.filter((o): o is Extract<DeliveryOutcome, { kind: K }> => o.kind === kind)
    const [delivered, retries, failures, discards] = [of('delivered'), of('retry'), of('failed'), of('discarded')]
    const seqs = (list: DeliveryOutcome[]) => list.map((o) => o.claim.seq)
    const tokens = (list: DeliveryOutcome[]) => list.map((o) => o.claim.token)
    const run = async <R extends SettledRow = SettledRow>(list: DeliveryOutcome[], sql: string, params: unknown[]): Promise<R[]> =>
      list.length === 0 ? [] : (await tx.query<R>(sql, params)).rows
    const done = await run(delivered, SQL.delivered, [now, seqs(delivered), tokens(delivered), delivered.map((o) => o.statusCode)])
    const retried = await run<FailedRow>(retries, SQL.retryDelivery, [now, seqs(retries), tokens(retries),
      retries.map((o) => o.statusCode), retries.map((o) => o.error), retries.map((o) => o.retryInMs)])
    const failed = await run<FailedRow>(failures, SQL.failDelivery, [now, seqs(failures), tokens(failures),
      failures.map((o) => o.statusCode), failures.map((o) => o.error)])
    const discarded = await run(discards, SQL.discardDelivery, [seqs(discards), tokens(discards)])
    // Only the attempts whose claim was still current: a late one must not overwrite the last error.
    const errors = new Map([...retried, ...failed].map((row) => [row.endpoint_id, row.last_error]))
    if (errors.size > 0) {
      const ids = [...errors.keys()].sort()
      await tx.query(SQL.endpointError, [now, ids, ids.map((id) => errors.get(id))])
    }
    const probes = new Set(outcomes.filter((o) => o.claim.probe === true).map((o) => o.claim.seq))
    const changes = circuitChanges([
      ...done.map((row) => ({ ...row, kind: 'delivered' as const, probe: probes.has(row.seq) })),
      ...[...retried, ...failed].map((row) => ({ ...row, kind: 'failed' as const, probe: probes.has(row.seq) }))
    ])
    if (changes.length > 0) {
      await tx.query(SQL.endpointCircuit, [changes.map((c) => c.endpoint_id), circuit.failures, circuit.cooldownMs, circuit.maxCooldownMs,
        changes.map((c) => c.succeeded), changes.map((c) => c.probeFailed), changes.map((c) => c.failures)])
      // The deliveries that waited while it was open are due: other processes are told.
      transitions.deliveries.madeDue(changes.filter((c) => c.probeSucceeded).length)
    }
    transitions.deliveries.delivered(done)
    transitions.deliveries.failed(failed)
    transitions.deliveries.discarded(discarded)
    // And the chains of the claims whose delivery is no longer theirs: erased with its order, say, whose order.deleted waits for this attempt.
    const current = new Set([...done, ...retried, ...failed, ...discarded].map((row) => row.seq))
    const gone = outcomes.filter((o) => !current.has(o.claim.seq)).map((o) => o.claim)
    const settledChains = [...done, ...failed, ...discarded, ...gone].filter((row): row is SettledRow & { order_id: string } => row.order_id !== null)
    if (settledChains.length > 0) {
      const { rowCount } = await tx.query(SQL.promoteNext, [settledChains.map((row) => row.endpoint_id), settledChains.map((row) => row.order_id)])
      transitions.deliveries.madeDue(rowCount ?? 0)
    }
    return done.length + retried.length + failed.length + discarded.length
  }

  async release (tx: pg.PoolClient, transitions: Transitions, claims: DeliveryClaim[], now: number): Promise<number> {
    const { rowCount } = await tx.query(SQL.releaseDelivery, [now, claims.map((c) => c.seq), claims.map((c) => c.token)])
    transitions.deliveries.madeDue(rowCount ?? 0)
    return rowCount ?? 0
  }

  async nextIn (): Promise<number | null> {
    const { rows } = await this.pool.query<{ delay: number | null }>(SQL.nextDelivery)
    return rows[0]?.delay ?? null
  }
}

export function deliveriesQuery (endpointId: string, { status, limit, before = Number.MAX_SAFE_INTEGER }: DeliveryQuery): pg.QueryConfig {
  return { text: SQL.deliveries, values: [endpointId, status, before, limit + 1] }
}

/** How soon an event waiting for an earlier one of its order that is being sent is looked at again. */
const BLOCKED_RECHECK_MS = 1000

/** A delivery claim's statement, once its transaction `tx` has run what prepares it (prepareDeliveryClaim). */
export async function claimDeliveriesQuery (tx: pg.ClientBase, limit: number, leaseMs: number, token: string, cap?: EndpointCap): Promise<pg.QueryConfig> {
  const { rows } = await tx.query<{ probes: string[], open: string[] }>(SQL.prepareDeliveryClaim)
  const { probes, open } = rows[0]!
  const roomFor = roomOf(cap, limit)
  const busy = [...cap?.busy.keys() ?? []]
  return {
    text: SQL.claimDeliveries,
    values: [token, leaseMs, limit, BLOCKED_RECHECK_MS, busy, busy.map(roomFor), roomFor(''), limit * CLAIM_WINDOW, probes, open]
  }
}
