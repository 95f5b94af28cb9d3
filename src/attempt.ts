import type { AttemptContext, Work } from './processing-step.ts'
import type { Claim } from './store/order-store.ts'

/** The largest result kept, in bytes of JSON. */
export const MAX_RESULT_BYTES = 64 * 1024
/** last_error keeps at most this many characters of an error's message (a thrown HTTP body can be megabytes). */
export const MAX_ERROR_CHARS = 1000

/** How an attempt ended: completed with a result (JSON text; null for none), or failed. */
export type AttemptOutcome =
  | { ok: true, result: string | null }
  | { ok: false, error: string, retryable: boolean }

/**
 * One attempt at a claimed order: its context for the work, and its end. The signal is made on
 * first use: an AbortSignal costs ~3 us to make (Node 20), as much as the rest of an attempt that
 * does nothing, and work that never waits needs none. Aborted before that, it is made aborted.
 */
export class Attempt implements AttemptContext {
  private controller: AbortController | undefined
  private abortReason: Error | undefined
  private end: ((outcome: AttemptOutcome) => void) | undefined
  private timer: NodeJS.Timeout | undefined

  constructor (readonly claim: Claim) {}

  get attempt (): number {
    return this.claim.attempts
  }

  get signal (): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.abortReason) this.controller.abort(this.abortReason)
    }
    return this.controller.signal
  }

  /** Runs the work; past `timeoutMs` the attempt is aborted (see abort). Never rejects. */
  run (work: Work, timeoutMs: number): Promise<AttemptOutcome> {
    if (this.abortReason) return Promise.resolve(aborted(this.abortReason))
    return new Promise((resolve) => {
      this.end = (outcome) => {
        clearTimeout(this.timer)
        resolve(outcome)
      }
      this.timer = setTimeout(() => this.abort(new DOMException(`attempt timed out after ${timeoutMs} ms`, 'TimeoutError')), timeoutMs)
      void outcomeOf(work, this).then(this.end)
    })
  }

  /**
   * Ends the attempt at once, failed (retryable) with the reason's message, and aborts its signal
   * with the reason; whatever the work does afterwards is ignored. Only the first call counts.
   */
  abort (reason: Error): void {
    if (this.abortReason) return
    this.abortReason = reason
    this.end?.(aborted(reason))
    this.controller?.abort(reason)
  }
}

function aborted (reason: Error): AttemptOutcome {
  return { ok: false, error: reason.message, retryable: true }
}

async function outcomeOf (work: Work, attempt: Attempt): Promise<AttemptOutcome> {
  let value: unknown
  try {
    value = await work(attempt.claim, attempt)
  } catch (err) {
    return { ok: false, error: errorMessage(err), retryable: (err as { retryable?: unknown } | null | undefined)?.retryable !== false }
  }
  return resultOf(value)
}

/**
 * A result as the JSON text kept: undefined and null are none. One that is not JSON or is too
 * large fails the order at once: the work was done, and doing it again would give the same.
 */
function resultOf (value: unknown): AttemptOutcome {
  if (value === undefined || value === null) return { ok: true, result: null }
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (err) {
    return { ok: false, error: `result refused: not JSON-serialisable (${errorMessage(err)})`, retryable: false }
  }
  if (json === undefined) return { ok: false, error: `result refused: a ${typeof value} is not JSON-serialisable`, retryable: false }
  const bytes = Buffer.byteLength(json)
  if (bytes > MAX_RESULT_BYTES) {
    return { ok: false, error: `result refused: ${bytes} bytes of JSON, more than the ${MAX_RESULT_BYTES} allowed`, retryable: false }
  }
  return { ok: true, result: json === 'null' ? null : json }
}

/** What last_error says about a thrown value, Error or not, cut at MAX_ERROR_CHARS. */
export function errorMessage (thrown: unknown): string {
  const message = messageOf(thrown)
  return message.length > MAX_ERROR_CHARS ? `${message.slice(0, MAX_ERROR_CHARS - 1)}…` : message
}

function messageOf (thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message || thrown.name
  if (typeof thrown === 'string') return thrown
  const message = (thrown as { message?: unknown } | null | undefined)?.message
  if (typeof message === 'string') return message
  return `a value that is not an Error was thrown: ${describe(thrown)}`
}

function describe (value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}
