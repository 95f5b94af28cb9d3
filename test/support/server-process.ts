import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { PACKAGE_ROOT as ROOT } from '../../src/package-root.ts'
import { waitFor } from '../helper.ts'

/**
 * The command line to start `command` with, as a test starts a process. Under tap, every Node
 * process started gets tap's processinfo hook (tap puts it back in NODE_OPTIONS at each spawn),
 * to record the process's coverage and the files it loaded. Without coverage (`npm test`; `npm
 * run coverage` keeps it), the processes tests start go without it: it doubled the CPU a server
 * takes to start (0.5 s to 1.1 s), and the tests start over a hundred.
 */
export function withoutTapHook (command: string[]): string[] {
  if (process.env._TAPJS_PROCESSINFO_COVERAGE_ !== '0') return command
  const nodeOptions = (process.env.NODE_OPTIONS ?? '').replace(/"?--(?:import|loader)=\S*@tapjs\/processinfo\S*/g, '').trim()
  return ['env', `NODE_OPTIONS=${nodeOptions}`, ...command]
}

/** Runs `command` to its end (killed after 30 s), with `env` added to this process's environment. */
export function runToEnd (command: string[], env: Record<string, string>): SpawnSyncReturns<string> {
  const [file, ...args] = withoutTapHook(command)
  return spawnSync(file!, args, { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 })
}

/** What `npm run build` compiles (tsconfig.build.json) and what decides how. */
const BUILD_INPUTS = ['src', 'plugins', 'routes', 'tsconfig.json', 'tsconfig.build.json', 'package.json']

/** The latest change under `path`: a file's or folder's mtime (a folder's changes when a file in it is added, removed or renamed). */
function latestChange (path: string): number {
  const stat = statSync(path, { throwIfNoEntry: false })
  if (stat === undefined) return 0
  if (!stat.isDirectory()) return stat.mtimeMs
  return readdirSync(path).reduce((latest, name) => Math.max(latest, latestChange(join(path, name))), stat.mtimeMs)
}

/**
 * Whether dist/ holds the sources as they are: `npm run build` stamps dist/.built with the time it
 * began, after it compiled without error, so a source saved while it ran, or touched since (a
 * git stash and pop, an editor), counts as newer than the build until the next one.
 */
function buildIsCurrent (root: string): boolean {
  const built = statSync(join(root, 'dist', '.built'), { throwIfNoEntry: false })
  return built !== undefined && BUILD_INPUTS.every((input) => latestChange(join(root, input)) < built.mtimeMs)
}

const currentBuilds = new Map<string, boolean>()
/**
 * The compiled copy of a TypeScript entry point (`src/server.ts` -> `dist/src/server.js`) when
 * dist/ was built after the last change to the sources, as `npm test` does first; else the source
 * itself, run through tsx. A server starts on 2.1 s of CPU compiled against 3.3 through tsx, and
 * the tests start over a hundred.
 */
export function compiledWhenCurrent (entry: string, root = ROOT): string {
  if (!entry.endsWith('.ts')) return entry
  let current = currentBuilds.get(root)
  if (current === undefined) currentBuilds.set(root, current = buildIsCurrent(root))
  const compiled = join('dist', entry.replace(/\.ts$/, '.js'))
  return current && existsSync(join(root, compiled)) ? compiled : entry
}

export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** How to start a process: a command, and whether it leads a process group of its own. */
interface Launch { command: string[], detached?: boolean }

/** A server in its own process, on a port of its own: by default the real one (`npm start`'s entry point). */
export class ServerProcess {
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  output = ''

  private constructor (readonly url: string, env: Record<string, string>, { command, detached = false }: Launch) {
    const [file, ...args] = withoutTapHook(command)
    this.child = spawn(file!, args, {
      cwd: ROOT,
      // No overload guard unless a test sets one: a process starting on a loaded machine lags (test/helper.ts).
      env: { ...process.env, LOG_LEVEL: 'warn', MAX_EVENT_LOOP_DELAY_MS: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached
    })
    this.exited = once(this.child, 'exit').then(([code]) => code as number | null)
    this.child.stdout?.on('data', (chunk) => { this.output += chunk })
    this.child.stderr?.on('data', (chunk) => { this.output += chunk })
  }

  private static node (source: string, cpu?: number, nodeArgs: string[] = []): Launch {
    const entry = compiledWhenCurrent(source)
    const command = [process.execPath, ...nodeArgs, ...(entry.endsWith('.ts') ? ['--import', 'tsx'] : []), entry]
    // Pinned to one core (benchmarks), the load generator on the other cannot steal its time.
    if (cpu !== undefined) command.unshift('taskset', '-c', String(cpu))
    return { command }
  }

  /**
   * `npm start` or `npm run worker` as a person or systemd runs it: the leader of a process group
   * of its own, whatever processes npm starts below it.
   */
  private static npm (script: 'start' | 'worker'): Launch {
    return { command: script === 'start' ? ['npm', 'start'] : ['npm', 'run', script], detached: true }
  }

  /** A worker process (`npm run worker`), ready once it says it is processing orders. */
  static async startWorker (env: Record<string, string>, { viaNpm = false, entry = 'src/worker.ts', nodeArgs = [] as string[] } = {}): Promise<ServerProcess> {
    // Its readiness is read from its info log.
    const worker = new ServerProcess('', { ...env, LOG_LEVEL: 'info' }, viaNpm ? ServerProcess.npm('worker') : ServerProcess.node(entry, undefined, nodeArgs))
    await waitFor(() => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited: ${worker.output}`)
      return worker.output.includes('worker processing orders')
    }, 'the worker to start', 30_000)
    return worker
  }

  static async start (env: Record<string, string>, entry = 'src/server.ts', cpu?: number, nodeArgs: string[] = []): Promise<ServerProcess> {
    return ServerProcess.listening(env, ServerProcess.node(entry, cpu, nodeArgs))
  }

  /** `npm start` in a process group of its own. */
  static async startWithNpm (env: Record<string, string>): Promise<ServerProcess> {
    return ServerProcess.listening(env, ServerProcess.npm('start'))
  }

  private static async listening (env: Record<string, string>, launch: Launch): Promise<ServerProcess> {
    const port = await freePort()
    const server = new ServerProcess(`http://127.0.0.1:${port}`, { ...env, PORT: String(port) }, launch)
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
    this.child.kill(signal)
    return this.exited
  }

  /** Sends the signal to the whole process group, as a terminal's Ctrl-C or systemd's stop does. */
  signalGroup (signal: NodeJS.Signals): void {
    process.kill(-(this.child.pid as number), signal)
  }

  /** Kills every process of its group at once (a test's teardown). */
  killGroup (): void {
    try { this.signalGroup('SIGKILL') } catch { /* already gone */ }
  }

  /** Resolves once no process of its group is left (npm may exit before what it started). */
  async groupGone (timeoutMs = 30_000): Promise<void> {
    await waitFor(() => {
      try {
        process.kill(-(this.child.pid as number), 0)
        return false
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true
        throw err
      }
    }, 'every process of the group to exit', timeoutMs)
  }
}
