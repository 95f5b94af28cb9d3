import { Logger, makeWorkerUtils, run, runMigrations, type RunnerOptions } from 'graphile-worker'
import { addInChunks, jobCount, measure } from './peer-run.ts'

// graphile-worker running JOBS no-op jobs on the PostgreSQL database DATABASE_URL (of this run
// alone): added in bulk (add_jobs), run by one worker pool in this process with its batching on,
// timed from the first add to the last completion stored.

/**
 * Jobs run at once, and jobs fetched (and locked) per query. Tried on the project's 2-core machine
 * while other work ran on it (load average 5-9), 50,000 jobs, settings interleaved, median jobs/s
 * of 3 runs each (concurrency/local queue): 24/500 (its own performance test's setting): 16,800;
 * 24/2,000: 20,000; 50/2,000: 22,100; then 10/2,000: 18,300; 24/2,000: 19,100; 24/5,000: 21,800;
 * 50/5,000: 25,400; 100/2,000: 23,000; then 50/5,000: 23,900; 100/5,000: 21,000; 200/5,000:
 * 18,300; 50/10,000: 20,000. Earlier, busier runs: 1/100: 3,200; 10/100: 3,600. A pool of
 * concurrency + 1 connections instead of its default 10 changed nothing.
 */
const CONCURRENCY = 50
const LOCAL_QUEUE_SIZE = 5000

const jobs = jobCount()
// Warnings and errors only: a line per job would measure the console (NO_LOG_SUCCESS, set by the
// harness, drops the "Completed task" line itself).
const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`${message}\n`)
})
const options: RunnerOptions = {
  connectionString: process.env.DATABASE_URL!,
  logger,
  concurrency: CONCURRENCY,
  noHandleSignals: true,
  taskList: { noop: async () => {} },
  preset: {
    worker: {
      // Its batching (https://worker.graphile.org/docs/performance): jobs fetched LOCAL_QUEUE_SIZE
      // at a time, completions (and failures) written together by the next tick.
      localQueue: { size: LOCAL_QUEUE_SIZE },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0
    }
  }
}
// Its schema is installed before the clock starts, as the service's migrations are.
await runMigrations(options)
const utils = await makeWorkerUtils(options)
const runner = await run(options)

let succeeded = 0
const allRun = new Promise<void>((resolve, reject) => {
  runner.events.on('job:success', () => { if (++succeeded === jobs) resolve() })
  runner.events.on('job:error', ({ error }) => reject(error))
})
/** A job's completion is written in a batch after it ran: the last one counts once stored. */
async function jobsLeft (): Promise<number> {
  const { rows } = await utils.withPgClient((client) => client.query<{ left: number }>('SELECT count(*)::int AS left FROM graphile_worker.jobs'))
  return rows[0]!.left
}
await measure(jobs, async () => {
  await addInChunks(jobs, (numbers) => utils.addJobs(numbers.map((i) => ({ identifier: 'noop', payload: { i } }))))
  await allRun
  while (await jobsLeft() > 0) await new Promise((resolve) => setTimeout(resolve, 10))
})
await runner.stop()
await utils.release()
