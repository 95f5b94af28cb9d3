import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { BaseLogger } from 'pino'
import { ConfigError } from '../config.ts'
import { toOrder, type Order, type OrderRecord } from '../order.ts'
import type { AttemptContext, ProcessingStep } from './processing-step.ts'

/** A pino logger, as the module sees it: its level and its methods by level. */
export type StepLog = Pick<BaseLogger, 'level' | 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'>

/** What the default export of a PROCESSOR_MODULE is called with besides the order. */
export interface ProcessOrderContext {
  /** Aborted when the attempt times out (ATTEMPT_TIMEOUT_MS) or the service stops before it ends. */
  signal: AbortSignal
  /** Which attempt at the order this is, from 1. */
  attempt: number
  /** A child logger naming the order and the attempt. */
  log: StepLog
}

/** The default export of a PROCESSOR_MODULE: its result is kept as the order's `result`; throwing fails the attempt. */
export type ProcessOrder = (order: Order, context: ProcessOrderContext) => unknown

/** A logger that makes child loggers: pino's, and so Fastify's. */
export interface ParentLogger {
  child (bindings: Record<string, unknown>): StepLog
}

/**
 * Where the module is: a file: URL as given; any other value is a path, from the working directory
 * (not from the service's own files, which `npm start` runs from dist/).
 */
function moduleUrl (specifier: string): URL {
  return specifier.startsWith('file:') ? new URL(specifier) : pathToFileURL(resolve(process.cwd(), specifier))
}

/**
 * The processing step of PROCESSOR_MODULE, an ES module or a CommonJS one: its default export is
 * called for each attempt with the order as GET shows it. A module that cannot be used (no such
 * file, one that fails to load, no function as its default export) throws a ConfigError that
 * names the variable and says why, in one line.
 */
export async function loadProcessorModule (specifier: string, log: ParentLogger): Promise<ProcessingStep> {
  const refuse = (why: string) => new ConfigError(`PROCESSOR_MODULE (${specifier}) ${why}`)
  let path: string
  let url: URL
  try {
    url = moduleUrl(specifier)
    path = fileURLToPath(url)
  } catch (err) {
    throw refuse(`is neither a path nor a file: URL: ${firstLine(err)}`)
  }
  if (!existsSync(path)) throw refuse(`names no file: ${path} does not exist`)
  let exports: Record<string, unknown>
  try {
    exports = await import(url.href) as Record<string, unknown>
  } catch (err) {
    throw refuse(`could not be loaded: ${loadError(err, path)}`)
  }
  const processOrder = defaultFunction(exports)
  if (!processOrder) {
    throw refuse(`must have a function as its default export, (order, { signal, attempt, log }) => result; ${describeDefault(exports)}`)
  }
  return {
    readsOrders: true,
    work: (claim, context) => processOrder(toOrder(claim.order as OrderRecord), new ModuleContext(claim.order_id, context, log))
  }
}

/**
 * What the module's function gets besides the order. Its signal and child logger are made only if
 * the function reads them: a signal costs ~3 us, a child logger ~0.4 us. A class: accessors written
 * in an object literal, made per attempt, cost ~1 us more.
 */
class ModuleContext implements ProcessOrderContext {
  private child: StepLog | undefined

  constructor (private readonly orderId: string, private readonly context: AttemptContext, private readonly parent: ParentLogger) {}

  get signal (): AbortSignal {
    return this.context.signal
  }

  get attempt (): number {
    return this.context.attempt
  }

  get log (): StepLog {
    return (this.child ??= this.parent.child({ order_id: this.orderId, attempt: this.attempt }))
  }
}

/**
 * `export default fn` (ES module), `module.exports = fn` (CommonJS, whose module.exports is its
 * default export), or `exports.default = fn` (CommonJS compiled from an ES module by TypeScript or Babel).
 */
function defaultFunction (exports: Record<string, unknown>): ProcessOrder | undefined {
  const first = exports.default
  if (typeof first === 'function') return first as ProcessOrder
  const second = (first as Record<string, unknown> | null | undefined)?.default
  return typeof second === 'function' ? second as ProcessOrder : undefined
}

function describeDefault (exports: Record<string, unknown>): string {
  if (!('default' in exports)) return `it has no default export (it exports: ${Object.keys(exports).join(', ') || 'nothing'})`
  const value = exports.default
  if (value === null || value === undefined) return `its default export is ${value}`
  if (Array.isArray(value)) return 'its default export is an array'
  return `its default export is ${/^[aeiou]/.test(typeof value) ? 'an' : 'a'} ${typeof value}`
}

/** Why a module did not load. Node gives no line for a syntax error in a module that was imported, but `node --check` does. */
function loadError (err: unknown, path: string): string {
  if (!(err instanceof Error) || err.name === 'Error') return firstLine(err)
  return `${err.name}: ${firstLine(err)}${err instanceof SyntaxError ? ` (node --check ${path} shows where)` : ''}`
}

function firstLine (err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] as string
}
