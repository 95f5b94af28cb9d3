import { once } from 'node:events'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

// Plain CommonJS so the worker needs no TypeScript loader.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path)
db.pragma('busy_timeout = 5000')
const checkpoint = () => {
  try { db.pragma('wal_checkpoint(PASSIVE)') } catch (err) { parentPort.postMessage(String(err)) }
}
const timer = setInterval(checkpoint, workerData.intervalMs)
parentPort.once('message', () => { clearInterval(timer); db.close(); parentPort.close() })
`

/**
 * Copies the WAL back into the database file from a worker thread, so that the fsyncs of a
 * checkpoint never block the event loop. PASSIVE checkpoints do not wait for, or block, writers.
 */
export class Checkpointer {
  private readonly worker: Worker

  constructor (path: string, intervalMs: number, onError: (message: string) => void) {
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, intervalMs, driver: createRequire(import.meta.url).resolve('better-sqlite3') }
    })
    this.worker.on('message', onError)
    this.worker.unref()
  }

  async close (): Promise<void> {
    const exited = once(this.worker, 'exit')
    this.worker.ref() // keep the process alive until the worker has closed its connection
    this.worker.postMessage('stop')
    await exited
  }
}
