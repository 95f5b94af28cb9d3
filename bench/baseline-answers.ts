import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Static } from '@sinclair/typebox'
import type { Metrics } from '../routes/order-metrics.ts'
import type { Order } from '../src/order.ts'

/**
 * What the baseline answers, read from the service under test just before it is measured: the
 * baseline then sends the same shape and size, so a ratio compares the work around the answer
 * rather than the answers' lengths.
 */
export interface BaselineAnswers {
  /** GET /orders/metrics: the service's answer, sent as it is. */
  metrics?: Static<typeof Metrics>
  /** GET /orders/:order_id: stored orders of the service, sent in turn with the requested order_id. */
  orders?: Order[]
}

/** The environment variable naming the file the baseline reads its answers from. */
export const ANSWERS_FILE = 'BASELINE_ANSWERS'

/** Writes answers to a file of their own; `remove` deletes it once the baseline has read it. */
export function writeAnswers (answers: BaselineAnswers): { file: string, remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'orders-bench-answers-'))
  const file = join(dir, 'answers.json')
  writeFileSync(file, JSON.stringify(answers))
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

export function readAnswers (): BaselineAnswers {
  const file = process.env[ANSWERS_FILE]
  return file ? JSON.parse(readFileSync(file, 'utf8')) as BaselineAnswers : {}
}
