import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import { checkDestination, RefusedDestination, type Destination, type DestinationRules } from './destination.ts'

/** The most of a receiver's answer that is read; the connection is cut past it. */
export const MAX_RESPONSE_BYTES = 64 * 1024

const USER_AGENT = 'order-service-webhooks/1.0'

export const ATTEMPT_KINDS = ['delivered', 'http_error', 'timeout', 'network_error', 'refused'] as const
export type AttemptKind = typeof ATTEMPT_KINDS[number]

/** What one attempt came to: delivered only on a 2xx; `error` says why not, for a person. */
export interface AttemptResult {
  kind: AttemptKind
  statusCode: number | null
  error: string | null
}

export interface SenderOptions extends DestinationRules {
  /** WEBHOOK_TIMEOUT_MS: the longest one attempt may take, resolving the name and connecting included. */
  timeoutMs: number
  /** An idle kept-alive connection is closed after this long; IDLE_CONNECTION_MS by default. */
  idleMs?: number
}

/**
 * Idle kept-alive connections are closed after this: long enough to carry a burst of events to a
 * receiver over a few connections, short enough that receivers gone quiet do not hold sockets
 * (kept with no limit, 5 endpoints created, sent to and deleted took the process from 30 file
 * descriptors to 280).
 */
const IDLE_CONNECTION_MS = 4000
/** The most idle connections kept per receiver origin; the others are closed once their answer is in. */
const MAX_IDLE_CONNECTIONS = 4

/**
 * Posts webhooks with node:http and node:https: the host is resolved and checked before any socket
 * is opened, and the connection goes to the address that was checked; redirects are not followed
 * (a 3xx is a failed attempt); at most MAX_RESPONSE_BYTES of an answer are read; everything, from
 * resolving the name to the status line, ends within `timeoutMs` (or when `signal` aborts).
 * Connections are kept alive between attempts to the same origin, a few of them and briefly.
 */
export class WebhookSender {
  /** One agent per origin, so that the connections of an origin no endpoint uses any more can be closed. */
  private readonly agents = new Map<string, http.Agent>()

  constructor (private readonly options: SenderOptions) {}

  async send (url: string, headers: Record<string, string>, body: string, signal?: AbortSignal): Promise<AttemptResult> {
    const deadline = AbortSignal.timeout(this.options.timeoutMs)
    const abort = signal ? AbortSignal.any([deadline, signal]) : deadline
    try {
      const destination = await untilAborted(checkDestination(url, this.options), abort)
      const response = await this.post(destination, headers, body, abort)
      const statusCode = response.statusCode as number // always set on a client's response
      if (statusCode >= 200 && statusCode < 300) return { kind: 'delivered', statusCode, error: null }
      const location = response.headers.location
      const redirect = statusCode >= 300 && statusCode < 400
        ? `: redirects are not followed${location === undefined ? '' : ` (Location: ${location.slice(0, 200)})`}`
        : ''
      return { kind: 'http_error', statusCode, error: `HTTP ${statusCode} ${response.statusMessage ?? ''}`.trim() + redirect }
    } catch (err) {
      if (err instanceof RefusedDestination) return { kind: 'refused', statusCode: null, error: err.message }
      if (deadline.aborted) return { kind: 'timeout', statusCode: null, error: `no answer within WEBHOOK_TIMEOUT_MS (${this.options.timeoutMs} ms)` }
      if (abort.aborted) return { kind: 'network_error', statusCode: null, error: 'cut off: the service is shutting down' }
      return { kind: 'network_error', statusCode: null, error: (err as Error).message }
    }
  }

  /** Resolves with the response once its status line and headers are in; its body is then read, at most MAX_RESPONSE_BYTES. */
  private async post ({ url, address, family }: Destination, headers: Record<string, string>, body: string, signal: AbortSignal): Promise<http.IncomingMessage> {
    // The checked address, whatever is asked: the name is not resolved a second time.
    const lookup: LookupFunction = (_hostname, options, callback) => {
      if (options.all) (callback as (err: null, addresses: Array<{ address: string, family: number }>) => void)(null, [{ address, family }])
      else callback(null, address, family)
    }
    const protocol = url.protocol as 'http:' | 'https:'
    return new Promise((resolve, reject) => {
      const request = (protocol === 'https:' ? https : http).request({
        protocol,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': USER_AGENT },
        agent: this.agentFor(url),
        lookup,
        signal
      }, (response) => {
        let bytes = 0
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          if (bytes > MAX_RESPONSE_BYTES) response.destroy()
        })
        response.on('error', () => {}) // cut off: the outcome is already known
        resolve(response)
      })
      request.on('error', reject)
      request.end(body)
    })
  }

  private agentFor (url: URL): http.Agent {
    let agent = this.agents.get(url.origin)
    if (!agent) {
      // `timeout` closes a free socket that stays idle that long (an attempt's own deadline is its signal).
      const options = { keepAlive: true, maxFreeSockets: MAX_IDLE_CONNECTIONS, timeout: this.options.idleMs ?? IDLE_CONNECTION_MS }
      agent = url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options)
      this.agents.set(url.origin, agent)
    }
    return agent
  }

  /**
   * Closes the idle connections to every origin none of `urls` (the endpoints' URLs) is at, at once:
   * an endpoint deleted leaves nothing open. Connections still in use close when idle.
   */
  keepOnly (urls: readonly string[]): void {
    const origins = new Set(urls.map((url) => URL.parse(url)?.origin))
    for (const [origin, agent] of this.agents) {
      if (origins.has(origin)) continue
      this.agents.delete(origin)
      for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy()
    }
  }

  /** Closes the connections kept alive. */
  close (): void {
    for (const agent of this.agents.values()) agent.destroy()
    this.agents.clear()
  }
}

/** `promise`, or a rejection as soon as `signal` aborts (a name being resolved cannot be cancelled, only left behind). */
async function untilAborted<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      onAbort = () => reject(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort)
  }
}
