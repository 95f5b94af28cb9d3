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

/** Times `run` (add every job, then wait for the last completion) and prints the result as a JSON line. */
export async function measure (jobs: number, run: () => Promise<void>): Promise<void> {
  const started = performance.now()
  await run()
  const result: PeerResult = { jobs, seconds: (performance.now() - started) / 1000 }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
