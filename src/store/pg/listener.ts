import pg from 'pg'
import type { StoreLog } from '../store-log.ts'

/** Waits before reconnecting a lost LISTEN connection. */
const RECONNECT_MS = 1000
/**
 * PostgreSQL keeps every notification until the slowest listening session has read it; once its
 * queue is full every NOTIFY fails, and with it every write of this service. Past half full a
 * session somewhere is not reading (stuck, or listening inside a long transaction).
 */
const QUEUE_USAGE_WARNING = 0.5

export interface ListenerOptions {
  /** How to connect, with the deadlines (connectionTimeoutMillis, query_timeout) the checks rely on. */
  connection: pg.ClientConfig
  /** How often a query checks that the connection still answers. */
  checkEveryMs: number
  channels: Record<string, (payload: string) => void>
  /** Run on the connection once LISTEN is in place, before it counts as listening (each time it connects). */
  afterListen: (client: pg.Client) => Promise<unknown>
  /** LISTEN is in place again after the connection was lost: notifications sent meanwhile were missed. */
  onReconnected: () => void
  log: StoreLog
}

/**
 * A dedicated connection that LISTENs on some channels. It reconnects when the connection is
 * lost, or stops answering without closing: a periodic query with a deadline notices that, and
 * also reports how full PostgreSQL's notification queue is.
 */
export class PgListener {
  private client: pg.Client | null = null
  private closed = false
  private lost = false
  private timer: NodeJS.Timeout | null = null
  /** Settles once the first LISTEN is in place: from then on no announcement is missed. */
  readonly ready: Promise<void>
  private listening!: () => void

  constructor (private readonly options: ListenerOptions) {
    this.ready = new Promise((resolve) => { this.listening = resolve })
    void this.connect()
  }

  private async connect (): Promise<void> {
    const client = new pg.Client(this.options.connection)
    client.on('notification', (message) => {
      if (message.payload !== undefined) this.options.channels[message.channel]?.(message.payload)
    })
    client.on('error', (err) => this.reconnect(client, err))
    client.on('end', () => this.reconnect(client, new Error('connection closed')))
    this.client = client
    try {
      await client.connect()
      for (const channel of Object.keys(this.options.channels)) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
      await this.options.afterListen(client)
    } catch (err) {
      this.reconnect(client, err as Error)
      return
    }
    this.listening()
    if (this.lost) {
      this.lost = false
      this.options.log.info({}, 'notification listener connected again')
      this.options.onReconnected()
    }
    this.schedule(() => this.check(client), this.options.checkEveryMs)
  }

  private async check (client: pg.Client): Promise<void> {
    let usage: number
    try {
      const { rows } = await client.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage')
      usage = (rows[0] as { usage: number }).usage
    } catch (err) {
      this.reconnect(client, err as Error)
      return
    }
    if (usage > QUEUE_USAGE_WARNING) {
      this.options.log.warn({ usage }, 'PostgreSQL notification queue more than half full: a listening session is not reading; when full, every write fails')
    }
    if (this.client === client) this.schedule(() => this.check(client), this.options.checkEveryMs)
  }

  private schedule (fn: () => Promise<void>, delayMs: number): void {
    this.timer = setTimeout(() => { void fn() }, delayMs)
    this.timer.unref()
  }

  private reconnect (client: pg.Client, err: Error): void {
    if (this.closed || this.client !== client) return
    this.client = null
    if (this.timer) clearTimeout(this.timer)
    if (!this.lost) {
      this.lost = true
      this.options.log.warn({ err }, 'notification listener lost its connection: reconnecting')
    }
    // A query still waiting (the connection stopped answering) makes end() destroy the socket.
    client.end().catch(() => {})
    this.schedule(() => this.connect(), RECONNECT_MS)
  }

  /**
   * Calls `then` once every notification sent to this connection before has been delivered (a
   * query's answer comes after them), before any that comes after that answer; at once while it is
   * not connected, and when the query fails.
   */
  afterDelivered (then: () => void): void {
    if (this.client === null) then()
    else this.client.query('SELECT 1', () => { then() })
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    await this.client?.end().catch(() => {})
  }
}
