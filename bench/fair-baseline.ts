import { ServerProcess } from '../test/support/server-process.ts'
import { ANSWERS_FILE, writeAnswers, type BaselineAnswers } from './baseline-answers.ts'

const BASELINE = 'bench/baseline-server.ts'

/** Answers may differ by this fraction: a metrics answer grows by a few digits as its counts do. */
const SIZE_TOLERANCE = 0.03

/** One request of the size check: a GET, or a POST of `body` as JSON. */
export interface Probe { path: string, body?: unknown }

/** The baseline server on `cpu`, answering with `answers` (read from the service under test). */
export async function startBaseline (answers: BaselineAnswers, cpu: number): Promise<ServerProcess> {
  const { file, remove } = writeAnswers(answers)
  try {
    return await ServerProcess.start({ [ANSWERS_FILE]: file }, BASELINE, cpu)
  } finally {
    remove()
  }
}

/** The mean body size, in bytes, of a server's answers to `probes`; any answer but a 2xx throws. */
async function meanAnswerBytes (server: ServerProcess, probes: Probe[]): Promise<number> {
  let bytes = 0
  for (const { path, body } of probes) {
    const res = await fetch(`${server.url}${path}`, body === undefined
      ? undefined
      : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const answer = await res.arrayBuffer()
    if (!res.ok) throw new Error(`${path} answered ${res.status}: ${Buffer.from(answer).toString()}`)
    bytes += answer.byteLength
  }
  return bytes / probes.length
}

/**
 * Sends the same requests to both servers and compares the sizes of their answers: a ratio between
 * answers of different sizes would measure JSON length, so a difference beyond a few percent throws.
 */
export async function compareAnswerSizes (
  service: ServerProcess, baseline: ServerProcess, probes: Probe[]
): Promise<{ service: number, baseline: number }> {
  const sizes = { service: await meanAnswerBytes(service, probes), baseline: await meanAnswerBytes(baseline, probes) }
  if (Math.abs(sizes.service - sizes.baseline) > SIZE_TOLERANCE * sizes.service) {
    throw new Error(`unfair baseline: its answers average ${sizes.baseline.toFixed(1)} bytes, the service's ${sizes.service.toFixed(1)}`)
  }
  return sizes
}
