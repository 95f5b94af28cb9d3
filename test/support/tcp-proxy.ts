import { once } from 'node:events'
import { createConnection, createServer, type Server, type Socket } from 'node:net'

/** A TCP proxy a test controls: cut() drops every connection and refuses new ones; restore() undoes it. */
export class TcpProxy {
  private server: Server | null = null
  private readonly sockets = new Set<Socket>()
  port = 0

  constructor (private readonly targetHost: string, private readonly targetPort: number) {}

  async start (): Promise<void> {
    this.server = createServer((client) => {
      const upstream = createConnection(this.targetPort, this.targetHost)
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.on('close', () => this.sockets.delete(socket))
        socket.on('error', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    })
    this.server.listen(this.port, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
  }

  async cut (): Promise<void> {
    const closed = this.server ? once(this.server, 'close') : Promise.resolve()
    this.server?.close()
    for (const socket of this.sockets) socket.destroy()
    await closed
    this.server = null
  }

  async restore (): Promise<void> {
    await this.start()
  }
}
