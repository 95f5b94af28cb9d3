import { Agent, get, type IncomingMessage } from 'node:http'
import { waitFor } from '../test/helper.ts'

export interface OpenStreams {
  /** Streams the service has not closed. */
  readonly open: number
  /** Bytes received on all of them. */
  readonly bytes: number
  close: () => void
}

/** One stream: a 503 (the previous run's streams not yet seen closed by the service) is retried. */
async function openOne (url: string, agent: Agent): Promise<IncomingMessage> {
  return await waitFor(() => new Promise<IncomingMessage | undefined>((resolve, reject) => {
    get(url, { agent }, (res) => {
      if (res.statusCode === 200) return resolve(res)
      res.resume()
      if (res.statusCode === 503) resolve(undefined)
      else reject(new Error(`GET ${url}: ${res.statusCode}`))
    }).on('error', reject)
  }), `a stream at ${url}`, 30_000)
}

/** Opens an event stream at each path and reads them as fast as they come, discarding the events. */
export async function openStreams (base: string, paths: string[]): Promise<OpenStreams> {
  const agent = new Agent({ keepAlive: false })
  const streams = await Promise.all(paths.map((path) => openOne(`${base}${path}`, agent)))
  let open = streams.length
  let bytes = 0
  for (const res of streams) {
    res.on('data', (chunk: Buffer) => { bytes += chunk.length })
    res.on('close', () => { open-- })
  }
  return {
    get open () { return open },
    get bytes () { return bytes },
    close: () => { for (const res of streams) res.destroy() }
  }
}
