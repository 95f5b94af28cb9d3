import type { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'

/*
 * Lingering close. After an early answer (413, 415, 401, 403, 421, a 400 on the headers) the
 * client may still be sending its body. Closing the connection then makes the kernel answer the
 * bytes still arriving with a reset, which can throw the answer away before the client reads it:
 * Node's http client, Python's requests and Go's net/http report EPIPE or ECONNRESET instead of
 * the 4xx (9 tries in 20 with a 5 MB body, 3 in 20 with 50 MB). As nginx does, the answer says
 * `Connection: close`, the service half-closes after it, reads and discards what still arrives
 * up to these bounds, then closes.
 */

/** Most bytes read and discarded after an early answer: an upload of 50 MB is read to its end. */
export const LINGER_MAX_BYTES = 64 * 1024 * 1024
/** Longest time spent doing so; REQUEST_TIMEOUT_MS ends it sooner if it comes first. */
export const LINGER_MAX_MS = 5000

/** Whether an answer now would leave part of this request's body unread. */
export function bodyStillArriving (req: IncomingMessage): boolean {
  // A request without a body may not be `complete` yet while its headers are being handled.
  const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0'
  return hasBody && !req.complete
}

/** The connections of one server that linger, and their bounds. */
export class LingeringClose {
  /** Lingering connections, with the bytes read on each before its answer. */
  private readonly lingering = new Map<Socket, number>()
  private closing = false

  /**
   * For a request answered before its body arrived, with `Connection: close`: once the answer is
   * written, the connection lingers instead of closing.
   */
  afterAnswer (req: IncomingMessage): void {
    const socket = req.socket
    const before = socket.bytesRead
    // Read here, each chunk of the body is counted; otherwise Node would discard it unseen.
    req.on('data', () => this.lingers(socket)).resume()
    // Node closes the socket of a `Connection: close` answer with destroySoon() once the answer is
    // written: it then closes as soon as the answer is sent, which is what loses it.
    socket.destroySoon = () => this.linger(socket, before)
  }

  /** Lingers after an answer written straight to the socket: the HTTP parser refused the request. */
  afterRawAnswer (socket: Socket): void {
    this.linger(socket, socket.bytesRead)
  }

  /** Shutting down: lingering connections close now, and none lingers from here on. */
  closeAll (): void {
    this.closing = true
    for (const socket of this.lingering.keys()) socket.destroy()
  }

  /**
   * Whether the connection lingers, closing it once more than LINGER_MAX_BYTES arrived. Called for
   * each chunk that arrives (Node reports a parse error again for each one on a connection whose
   * request it refused).
   */
  lingers (socket: Socket): boolean {
    const before = this.lingering.get(socket)
    if (before === undefined) return false
    if (socket.bytesRead - before > LINGER_MAX_BYTES) socket.destroy()
    return true
  }

  private linger (socket: Socket, before: number): void {
    if (socket.destroyed) return
    if (this.closing) return Socket.prototype.destroySoon.call(socket)
    // Half-close: the answer, then FIN, so that the client reads the answer to its end.
    socket.end()
    this.lingering.set(socket, before)
    const deadline = setTimeout(() => socket.destroy(), LINGER_MAX_MS)
    socket.once('close', () => {
      clearTimeout(deadline)
      this.lingering.delete(socket)
    })
  }
}
