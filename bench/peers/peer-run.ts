import { createInterface } from 'node:readline'

/**
 * What a peer benchmark (another job queue, run by bench/run.ts in a process of its own) shares:
 * how many no-op jobs to add, how they are added, and how the result is reported.
 */

/** Jobs per bulk add: the service's populate stores its orders 5,000 per transaction too. */
const ADD_CHUNK = 5000

export interface PeerResult { jobs: number, seconds: number }

/** The number of jobs to run, from JOBS. */
export function jobCount (): number {
  const jobs = Number(process.env.JOBS)
  if (!Number.isSafeInteger(jobs) || jobs < 1) throw new Error(`JOBS must be a positive integer, not ${process.env.JOBS}`)
  return jobs
}

/** Adds jobs 1..total through `addBulk`, ADD_CHUNK at a time, each chunk once the previous one is stored. */
export async function addInChunks (total: number, addBulk: (numbers: number[]) => Promise<unknown>): Promise<void> {
  for (let first = 1; first <= total; first += ADD_CHUNK) {
    await addBulk(Array.from({ length: Math.min(ADD_CHUNK, total - first + 1) }, (_, k) => first + k))
  }
}

/** A line the peer prints when it is ready to start, before it waits for the harness's line on stdin. */
export const READY = '{"ready":true}'

/**
 * Times `run` (add every job, then wait for the last completion) and prints the result as a JSON
 * line. Before and after, it waits for a line on stdin: the harness reads the database's and the
 * process's counters meanwhile, so that they cover the run and not the peer's start-up or stop.
 */
export async function measure (jobs: number, run: () => Promise<void>): Promise<void> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  process.stdout.write(`${READY}\n`)
  await lines.next()
  const started = performance.now()
  await run()
  const result: PeerResult = { jobs, seconds: (performance.now() - started) / 1000 }
  process.stdout.write(`${JSON.stringify(result)}\n`)
  await lines.next()
  process.stdin.destroy()
}
