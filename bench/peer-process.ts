import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { PACKAGE_ROOT } from '../src/package-root.ts'
import { READY, type PeerResult } from './peers/peer-run.ts'

/** A peer that has not finished after this long has failed. */
const PEER_TIMEOUT_MS = 600_000

/** What the harness does while a peer waits: before its run (its process id given) and after it. */
export interface PeerHooks { ready?: (pid: number) => Promise<void>, done?: () => Promise<void> }

/**
 * Runs a peer benchmark (bench/peers/) in a process of its own pinned to `cpu`, as the service is,
 * and returns its throughput in jobs/s; a failure or a timeout throws with its output.
 */
export async function runPeer (script: string, env: Record<string, string>, cpu: number, hooks: PeerHooks = {}): Promise<number> {
  // taskset runs the peer in its own process: the pid is the peer's.
  const child = spawn('taskset', ['-c', String(cpu), process.execPath, '--import', 'tsx', script], {
    cwd: PACKAGE_ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    signal: AbortSignal.timeout(PEER_TIMEOUT_MS),
    killSignal: 'SIGKILL'
  })
  let stdout = ''
  let stderr = ''
  let result: PeerResult | undefined
  let answering = Promise.resolve()
  // The peer waits for a line after each of its two lines: the hooks run meanwhile.
  const answer = (hook?: () => Promise<void>) => {
    answering = answering.then(async () => { await hook?.() }).finally(() => { child.stdin.write('\n') })
  }
  createInterface({ input: child.stdout }).on('line', (line) => {
    stdout += `${line}\n`
    if (line === READY) answer(() => hooks.ready?.(child.pid!) ?? Promise.resolve())
    else if (line.startsWith('{"jobs"')) {
      result = JSON.parse(line) as PeerResult
      answer(hooks.done)
    }
  })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  child.stdin.on('error', () => {}) // a peer that died: its exit below reports it
  child.on('error', () => {})
  const [code, signal] = await once(child, 'exit') as [number | null, NodeJS.Signals | null]
  await answering
  if (code !== 0 || !result) throw new Error(`${script} ${signal ? `was killed (${signal})` : `exited with ${code}`}: ${stderr || stdout}`)
  return result.jobs / result.seconds
}

/** Why Redis at `url` cannot be used, or null when it answers a PING. */
export async function redisUnreachable (url: string): Promise<string | null> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  // The connection's own error (ECONNREFUSED, say) says more than the failed command's.
  let connectionError: Error | undefined
  redis.on('error', (err: Error) => { connectionError = err })
  try {
    await redis.connect()
    await redis.ping()
    return null
  } catch (err) {
    return (connectionError ?? err as Error).message
  } finally {
    redis.disconnect()
  }
}

/** Runs BullMQ on a queue of its own, removed afterwards (its keys alone: never a FLUSHALL). */
export async function runBullmq (url: string, jobs: number, cpu: number): Promise<number> {
  const name = `orders-bench-${randomBytes(4).toString('hex')}`
  try {
    return await runPeer('bench/peers/bullmq.ts', { REDIS_URL: url, QUEUE: name, JOBS: String(jobs) }, cpu)
  } finally {
    const connection = new Redis(url, { maxRetriesPerRequest: null })
    const queue = new Queue(name, { connection })
    await queue.obliterate({ force: true })
    await queue.close()
    await connection.quit()
  }
}

/** Runs graphile-worker on `databaseUrl`, a database of its own. */
export async function runGraphileWorker (databaseUrl: string, jobs: number, cpu: number, hooks?: PeerHooks): Promise<number> {
  // NO_LOG_SUCCESS is graphile-worker's switch for its line per completed job.
  return await runPeer('bench/peers/graphile-worker.ts', { DATABASE_URL: databaseUrl, JOBS: String(jobs), NO_LOG_SUCCESS: '1' }, cpu, hooks)
}
