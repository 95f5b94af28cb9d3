import type { AttemptContext, Work } from './processing-step.ts'
import type { Claim } from '../store/order-store.ts'

/** The largest result kept, in bytes of JSON. */
export const MAX_RESULT_BYTES = 64 * 1024
/** last_error keeps at most this many characters, the cut marker included (a thrown HTTP body can be megabytes). */
export const MAX_ERROR_CHARS = 2000

/** How an attempt ended: completed with a result (JSON text; null for none), or failed. */
export type AttemptOutcome =
  | { ok: true, result: string | null }
  | { ok: false, error: string, retryable: boolean }

/**
 * One attempt at a claimed order, as its work sees it (AttemptContext). The signal is made on first
 * use: an AbortSignal costs ~3 us to make (Node 20), as much as the rest of an attempt that does
 * nothing, and work that never waits needs none. Aborted before that, it is made aborted.
 */
export class Attempt implements AttemptContext {
  /** When it times out (epoch ms), once started. */
  deadline = Infinity
  private controller: AbortController | undefined
  private abortReason: Error | undefined

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

  get aborted (): boolean {
    return this.abortReason !== undefined
  }

  /** Aborts its signal with `reason`; only the first call counts. */
  abort (reason: Error): void {
    if (this.abortReason) return
    this.abortReason = reason
    this.controller?.abort(reason)
  }
}

/**
 * Runs an attempt's work to its end; never rejects, whatever the work throws or returns (a revoked
 * Proxy, getters that throw, a Symbol): the outcome is computed without trusting either.
 */
export async function outcomeOf (work: Work, attempt: Attempt): Promise<AttemptOutcome> {
  let value: unknown
  try {
    value = await work(attempt.claim, attempt)
  } catch (err) {
    return failed(errorMessage(err), retryable(err))
  }
  return resultOf(value)
}

/** A failed outcome whose error is readable and of bounded length, whatever went into it (a path may hold any key). */
function failed (error: string, retryable: boolean): AttemptOutcome {
  return { ok: false, error: readable(error), retryable }
}

/** Only `retryable: false` stops retries; a value that cannot even be asked is retried like any other. */
function retryable (thrown: unknown): boolean {
  try {
    return (thrown as { retryable?: unknown } | null | undefined)?.retryable !== false
  } catch {
    return true
  }
}

/**
 * The time limit of running attempts (ATTEMPT_TIMEOUT_MS), with one timer for all: every attempt
 * has the same limit, so they reach it in the order they started, and only the oldest needs a
 * timer. A timer per attempt cost ~5% of the end-to-end throughput at zero delay (100,000 orders
 * in one process: 52,400 against 48,600 orders/s).
 */
export class AttemptDeadlines {
  /** In the order they started, which is the order of their deadlines. */
  private readonly running = new Set<Attempt>()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly limitMs: number, private readonly onExpired: (attempt: Attempt) => void, private readonly now = Date.now) {}

  /** How many attempts are running, within their limit. */
  get size (): number {
    return this.running.size
  }

  add (attempt: Attempt): void {
    attempt.deadline = this.now() + this.limitMs
    this.running.add(attempt)
    this.timer ??= this.arm(attempt.deadline)
  }

  delete (attempt: Attempt): void {
    this.running.delete(attempt)
    if (this.running.size === 0) this.clear()
  }

  clear (): void {
    this.running.clear()
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private arm (at: number): NodeJS.Timeout {
    return setTimeout(() => this.expire(), at - this.now())
  }

  private expire (): void {
    this.timer = undefined
    const now = this.now()
    for (const attempt of this.running) {
      // A timer may fire a little early: the rest is for the next one.
      if (attempt.deadline > now) {
        this.timer = this.arm(attempt.deadline)
        return
      }
      this.running.delete(attempt)
      this.onExpired(attempt)
    }
  }
}

/** Why a result is refused: thrown by the replacer to stop JSON.stringify at the first value it cannot keep. */
class Refused {
  constructor (readonly reason: string) {}
}

/**
 * A result as the JSON text kept: undefined and null are none. One rule for every value inside it:
 * what JSON cannot hold (a function, a Symbol, a BigInt, NaN or an infinity, undefined in an array,
 * a cycle) refuses the result, naming its path (`result refused: $.f is a function`), where
 * JSON.stringify would drop some silently and throw on others; a key whose value is undefined is
 * left out, as JSON.stringify and every JSON API in JavaScript do (it reads as absent). One that is
 * refused or too large fails the order at once: the work was done, and doing it again would give the same.
 */
function resultOf (value: unknown): AttemptOutcome {
  if (value === undefined || value === null) return { ok: true, result: null }
  let json: string | undefined
  try {
    json = JSON.stringify(value, refuseWhatJsonCannotHold())
  } catch (err) {
    return failed(err instanceof Refused ? `result refused: ${err.reason}` : `result refused: not JSON-serialisable (${errorMessage(err)})`, false)
  }
  if (json === undefined) return failed('result refused: $ is undefined', false)
  // A UTF-16 code unit is at most 3 bytes of UTF-8: most results need no count.
  if (json.length * 3 > MAX_RESULT_BYTES) {
    const bytes = Buffer.byteLength(json)
    if (bytes > MAX_RESULT_BYTES) {
      return failed(`result refused: ${bytes} bytes of JSON, more than the ${MAX_RESULT_BYTES} allowed`, false)
    }
  }
  return { ok: true, result: json === 'null' ? null : json }
}

/**
 * A JSON.stringify replacer that throws Refused at the first value JSON cannot hold. It is called
 * for every value, after toJSON, with the object holding it as `this`: the objects being written
 * form a stack (each holder is on it), which gives the path and finds cycles in linear time.
 */
function refuseWhatJsonCannotHold (): (this: unknown, key: string, value: unknown) => unknown {
  const open: unknown[] = []
  const keys: string[] = []
  const openSet = new Set<unknown>()
  return function (this: unknown, key: string, value: unknown): unknown {
    while (open.length > 0 && open[open.length - 1] !== this) {
      openSet.delete(open.pop())
      keys.pop()
    }
    const inArray = Array.isArray(this)
    const path = () => pathOf([...keys, open.length === 0 ? '' : segment(key, inArray)])
    switch (typeof value) {
      case 'function': throw new Refused(`${path()} is a function`)
      case 'symbol': throw new Refused(`${path()} is a Symbol`)
      case 'bigint': throw new Refused(`${path()} is a BigInt`)
      case 'number':
        if (!Number.isFinite(value)) throw new Refused(`${path()} is ${value}`)
        return value
      case 'undefined':
        if (inArray || open.length === 0) throw new Refused(`${path()} is undefined`)
        return value
      case 'object':
        if (value === null) return value
        if (openSet.has(value)) {
          throw new Refused(`${path()} is a cycle (it refers back to ${pathOf(keys.slice(0, open.indexOf(value) + 1))})`)
        }
        keys.push(open.length === 0 ? '' : segment(key, inArray))
        open.push(value)
        openSet.add(value)
        return value
      default:
        return value
    }
  }
}

function pathOf (segments: string[]): string {
  return `$${segments.join('')}`
}

function segment (key: string, inArray: boolean): string {
  if (inArray) return `[${key}]`
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
}

/**
 * What last_error says about a thrown value, Error or not, readable (see `readable`). Never
 * throws: inspecting a value can (a revoked Proxy, a getter that throws).
 */
export function errorMessage (thrown: unknown): string {
  let message: string
  try {
    message = messageOf(thrown)
  } catch {
    message = 'a value that could not be inspected was thrown'
  }
  return readable(message)
}

function messageOf (thrown: unknown): string {
  if (typeof thrown === 'string') return thrown
  const message = (thrown as { message?: unknown } | null | undefined)?.message
  if (thrown instanceof Error) {
    if (message === '' || message === undefined) return describe(thrown.name)
    return typeof message === 'string' ? message : `${describe(thrown.name)} whose message is not text: ${describe(message)}`
  }
  if (typeof message === 'string') return message
  return `a value that is not an Error was thrown: ${describe(thrown)}`
}

function describe (value: unknown): string {
  if (typeof value === 'string') return value
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

/**
 * Text as last_error keeps it: control characters but tab and newline (NUL, which PostgreSQL
 * cannot store in text, among them) and halves of surrogate pairs become U+FFFD, and past
 * MAX_ERROR_CHARS it is cut, with a marker saying so. Both replacements keep the length, so a
 * megabyte message is cut before it is looked at.
 */
export function readable (text: string): string {
  const cut = text.length > MAX_ERROR_CHARS
  const marker = cut ? `… [cut: ${text.length} characters in all]` : ''
  const kept = cut ? text.slice(0, MAX_ERROR_CHARS - marker.length) : text
  // eslint-disable-next-line no-control-regex
  return kept.replace(/[\u0000-\u0008\u000B-\u001F\u007F-\u009F]|\p{Cs}/gu, '\uFFFD') + marker
}
