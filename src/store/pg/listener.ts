import pg from 'pg'

/** Waits before reconnecting a lost LISTEN connection; meanwhile workers still claim on their timer. */
const RECONNECT_MS = 1000

/** A dedicated connection that LISTENs on some channels, and reconnects when the connection is lost. */
export class PgListener {
  private client: pg.Client | null = null
  private closed = false
  private retry: NodeJS.Timeout | null = null
  /** Settles once the first LISTEN is in place: from then on no announcement is missed. */
  readonly ready: Promise<void>
  private listening!: () => void

  constructor (
    private readonly connectionString: string,
    private readonly channels: Record<string, (payload: string) => void>
  ) {
    this.ready = new Promise((resolve) => { this.listening = resolve })
    void this.connect()
  }

  private async connect (): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString })
    client.on('notification', (message) => {
      if (message.payload !== undefined) this.channels[message.channel]?.(message.payload)
    })
    client.on('error', () => this.reconnect(client))
    client.on('end', () => this.reconnect(client))
    this.client = client
    try {
      await client.connect()
      for (const channel of Object.keys(this.channels)) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
      this.listening()
    } catch {
      this.reconnect(client)
    }
  }

  private reconnect (client: pg.Client): void {
    if (this.closed || this.client !== client) return
    this.client = null
    client.end().catch(() => {})
    this.retry = setTimeout(() => { void this.connect() }, RECONNECT_MS)
    this.retry.unref()
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.retry) clearTimeout(this.retry)
    await this.client?.end().catch(() => {})
  }
}
