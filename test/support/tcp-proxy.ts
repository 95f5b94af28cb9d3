import { once } from 'node:events'
import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy a test controls: cut() drops every connection and refuses new ones; blackHole()
 * stops forwarding without closing anything (a server that hangs, a network that drops
 * packets): bytes and closes wait, new connections are accepted and held. restore() undoes either.
 */
export class TcpProxy {
  private server: Server | null = null
  private readonly sockets = new Set<Socket>()
  private readonly pairs = new Set<[Socket, Socket]>()
  private readonly held = new Set<Socket>()
  private holding = false
  port = 0

  constructor (private readonly targetHost: string, private readonly targetPort: number) {}

  /** A started proxy in front of the PostgreSQL server of `databaseUrl`, and the URL that goes through it. */
  static async inFrontOf (databaseUrl: string): Promise<{ proxy: TcpProxy, url: string }> {
    const url = new URL(databaseUrl)
    const proxy = new TcpProxy(url.hostname, Number(url.port || 5432))
    await proxy.start()
    url.port = String(proxy.port)
    return { proxy, url: url.toString() }
  }

  async start (): Promise<void> {
    this.server = createServer((client) => {
      this.track(client)
      if (!this.holding) this.forward(client)
      else {
        client.pause()
        this.held.add(client)
      }
    })
    this.server.listen(this.port, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
  }

  private track (socket: Socket): void {
    this.sockets.add(socket)
    socket.on('close', () => { this.sockets.delete(socket); this.held.delete(socket) })
    socket.on('error', () => socket.destroy())
  }

  private forward (client: Socket): void {
    const upstream = createConnection(this.targetPort, this.targetHost)
    this.track(upstream)
    const pair: [Socket, Socket] = [client, upstream]
    this.pairs.add(pair)
    for (const socket of pair) {
      socket.on('close', () => this.pairs.delete(pair))
      socket.on('error', () => { client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream).pipe(client)
  }

  async cut (): Promise<void> {
    const closed = this.server ? once(this.server, 'close') : Promise.resolve()
    this.server?.close()
    for (const socket of this.sockets) socket.destroy()
    this.held.clear()
    await closed
    this.server = null
  }

  blackHole (): void {
    this.holding = true
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream)
      upstream.unpipe(client)
      client.pause()
      upstream.pause()
    }
  }

  async restore (): Promise<void> {
    if (!this.server) {
      await this.start()
      return
    }
    // As when a network heals: what waited is delivered, closes included.
    this.holding = false
    for (const [client, upstream] of this.pairs) client.pipe(upstream).pipe(client)
    for (const client of this.held) this.forward(client)
    this.held.clear()
  }
}
