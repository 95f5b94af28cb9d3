import { Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { addInChunks, jobCount, measure } from './peer-run.ts'

// BullMQ running JOBS no-op jobs: added in bulk to the queue QUEUE (of this run alone) at REDIS_URL,
// processed by one worker in this process, timed from the first add to the last completion.

/**
 * Jobs the worker runs at once. Tried on the project's 2-core machine while other work ran on it
 * (load average 4-9), 30,000 jobs, settings interleaved, median jobs/s of 4 runs each: 10: 5,600;
 * 50: 5,100; 200: 6,300; 1,000: 5,600; then 100: 7,400; 200: 8,100; 500: 7,400. With
 * `removeOnComplete` (200, 3 runs each, alternating) 7,200 against 6,100: within the noise, so
 * completed jobs are kept, as the service keeps its orders.
 */
const CONCURRENCY = 200

const jobs = jobCount()
const url = process.env.REDIS_URL!
const name = process.env.QUEUE!
// A worker needs maxRetriesPerRequest: null; its blocking connection is its own copy of this one.
const connections = [new Redis(url, { maxRetriesPerRequest: null }), new Redis(url, { maxRetriesPerRequest: null })] as const
const queue = new Queue(name, { connection: connections[0] })
const worker = new Worker(name, async () => {}, { connection: connections[1], concurrency: CONCURRENCY })
await worker.waitUntilReady()

// 'completed' is emitted once the job is recorded as completed in Redis.
let completed = 0
const allCompleted = new Promise<void>((resolve, reject) => {
  worker.on('completed', () => { if (++completed === jobs) resolve() })
  worker.on('failed', (_job, err) => reject(err))
  worker.on('error', reject)
})
await measure(jobs, async () => {
  await addInChunks(jobs, (numbers) => queue.addBulk(numbers.map((i) => ({ name: 'noop', data: { i } }))))
  await allCompleted
})
await worker.close()
await queue.close()
// Connections passed in are the caller's to close.
await Promise.all(connections.map((connection) => connection.quit()))
