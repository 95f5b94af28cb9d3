import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { PACKAGE_ROOT as ROOT } from '../../src/package-root.ts'
import { waitFor } from '../helper.ts'

export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** A server in its own process, on a port of its own: by default the real one (`npm start`'s entry point). */
export class ServerProcess {
  readonly child: ChildProcess
  output = ''

  private constructor (readonly url: string, env: Record<string, string>, entry: string, cpu?: number) {
    const command = [process.execPath, '--import', 'tsx', entry]
    // Pinned to one core (benchmarks), the load generator on the other cannot steal its time.
    if (cpu !== undefined) command.unshift('taskset', '-c', String(cpu))
    this.child = spawn(command[0]!, command.slice(1), {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    this.child.stdout?.on('data', (chunk) => { this.output += chunk })
    this.child.stderr?.on('data', (chunk) => { this.output += chunk })
  }

  /** A worker process (`npm run worker`), ready once it says it is processing orders. */
  static async startWorker (env: Record<string, string>): Promise<ServerProcess> {
    // Its readiness is read from its info log.
    const worker = new ServerProcess('', { ...env, LOG_LEVEL: 'info' }, 'src/worker.ts')
    await waitFor(() => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited: ${worker.output}`)
      return worker.output.includes('worker processing orders')
    }, 'the worker to start', 30_000)
    return worker
  }

  static async start (env: Record<string, string>, entry = 'src/server.ts', cpu?: number): Promise<ServerProcess> {
    const port = await freePort()
    const server = new ServerProcess(`http://127.0.0.1:${port}`, { ...env, PORT: String(port) }, entry, cpu)
    await waitFor(async () => {
      if (server.child.exitCode !== null) throw new Error(`server exited: ${server.output}`)
      return await fetch(`${server.url}/health`).then((r) => r.ok, () => false)
    }, 'the server to listen', 30_000)
    return server
  }

  async request (path: string, body?: unknown): Promise<{ status: number, json: any }> {
    const res = await fetch(`${this.url}${path}`, body === undefined
      ? undefined
      : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.status, json: await res.json() }
  }

  /** Sends the signal and resolves with the exit code (null when killed by the signal). */
  async stop (signal: NodeJS.Signals): Promise<number | null> {
    const exited = once(this.child, 'exit')
    this.child.kill(signal)
    const [code] = await exited
    return code as number | null
  }
}
