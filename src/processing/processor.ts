import PQueue from 'p-queue'
import type { Claim, OrderStore, Outcome } from '../store/order-store.ts'
import { RENEWALS_PER_LEASE, type Config } from '../config.ts'
import { Attempt, AttemptDeadlines, outcomeOf, type AttemptOutcome } from './attempt.ts'
import type { ProcessingStep, Work } from './processing-step.ts'
import { loadProcessorModule, type ParentLogger } from './processor-module.ts'
import { settleOutcomes } from './settle-outcomes.ts'
import { simulatedWork } from './simulated-work.ts'
import { TickBatch } from './tick-batch.ts'
import { traceAttempt, tracingOn } from '../tracing.ts'
import type { OrderStatus } from '../order.ts'

export interface ProcessorOptions {
  concurrency: number
  leaseMs: number
  maxAttempts: number
  retryBackoffMs: number
  /** ATTEMPT_TIMEOUT_MS: past it an attempt is aborted and fails. */
  attemptTimeoutMs: number
  work: Work
  /** The work reads the order (claim.order): claims then bring it. */
  readsOrders?: boolean
  now?: () => number
  onError?: (err: unknown, context: string) => void
}

/** The processing step the configuration names: PROCESSOR_MODULE (see loadProcessorModule), or the simulated work. */
export async function configuredStep (config: Config, log: ParentLogger): Promise<ProcessingStep> {
  if (config.PROCESSOR_MODULE === undefined) return simulatedWork(config.processingTime, config.FAILURE_RATE)
  return loadProcessorModule(config.PROCESSOR_MODULE, log)
}

/** The processor the configuration describes, running `step`. */
export function configuredProcessor (store: OrderStore, config: Config, step: ProcessingStep, onError: ProcessorOptions['onError']): OrderProcessor {
  return new OrderProcessor(store, {
    concurrency: config.PROCESSOR_CONCURRENCY,
    leaseMs: config.LEASE_MS,
    maxAttempts: config.MAX_ATTEMPTS,
    retryBackoffMs: config.RETRY_BACKOFF_MS,
    attemptTimeoutMs: config.ATTEMPT_TIMEOUT_MS,
    ...step,
    onError
  })
}

/** How long to wait before trying again after the store failed. */
const STORE_RETRY_MS = 1000
/** Expired leases are looked for at most this often: they are rare, and a claim tick can be frequent. */
const RECOVERY_INTERVAL_MS = 1000
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Claims claimable orders from the store up to its free capacity and runs them through p-queue.
 * It sleeps until the store reports new work or the next order becomes claimable, never polling hot;
 * outcomes finished in the same tick are settled in one store call.
 *
 * States (`state`, and within `running` whether a claim attempt is under way):
 *
 * - `new`: made, claiming nothing. `start()` moves it to `running`.
 * - `running`, sleeping: no claim attempt under way. It waits for a wake-up: the store announcing
 *   work (`onWork`: a create, a retry, a hand-back, from any process), the timer set for the next
 *   time an order becomes claimable or expired leases are due to be looked for, or an order of its
 *   own being settled (capacity freed). Each wake-up asks for a claim attempt (`wake` -> `tick`).
 * - `running`, claiming (`ticking`): one attempt at a time. It takes back other processes' expired
 *   claims (at most once a second, never its own), claims up to its free capacity, hands each
 *   claim to p-queue, and sets the timer for the next claimable order; a wake-up that comes
 *   meanwhile makes it attempt again (`tickAgain`) instead of starting a second one. A store
 *   failure sends it back to sleeping with a wake-up STORE_RETRY_MS later.
 * - `running`, paused (the store's processing state, POST /processing/pause): a claim attempt only
 *   recovers expired claims and reads the state again, once a second; the resume wakes it.
 * - Orders run in p-queue beside both, each attempt with its AbortSignal: each outcome joins the
 *   batch settled in the next tick (`flush`) and frees its place at once, waking it: the next claim
 *   runs beside that settle (on PostgreSQL, on another connection and core), so up to twice the
 *   concurrency may be claimed, at most `concurrency` of them running (`settling`). An attempt past
 *   its deadline (`attemptTimeoutMs`) fails there and then, and its signal aborts; until its work
 *   returns (it may ignore the signal) it keeps its place in p-queue and counts against the
 *   capacity (`overrunning`), so that no claim waits in p-queue behind it.
 * - The heartbeat, from `start()` until `stop()` has handed back what it had to: every
 *   LEASE_MS / RENEWALS_PER_LEASE it renews, in one store call, the leases of every claim this
 *   process holds, so that no other process takes over an attempt while this one lives. A renewal
 *   that fails is logged; the next one tries again.
 * - `stopped`: `stop()` from either running state. No wake-up claims any more; it waits for the
 *   claim attempt under way (what that claims must be handed back), lets running orders finish
 *   for the grace period and settles them, then aborts the attempts still running (their signals)
 *   and hands back (`release`) their claims, uncounted. A processor does not start again: make a new one.
 */
export class OrderProcessor {
  private readonly queue: PQueue
  /**
   * The claims this process holds, with their attempts. Keyed by claim, not order id: after a lease
   * ran out this process may hold a newer claim on the same order.
   */
  private readonly inFlight = new Map<Claim, Attempt>()
  private readonly deadlines: AttemptDeadlines
  /** Attempts that timed out, their outcome recorded, whose work has not returned yet. */
  private readonly overrunning = new Set<Attempt>()
  /** Claims whose outcome is recorded and waits for its settle (or is being settled): their work is done. */
  private readonly settling = new Set<Claim>()
  private readonly settles: TickBatch<Outcome>
  private timer: NodeJS.Timeout | null = null
  private timerAt = Infinity
  private tickScheduled = false
  /** The claim attempt under way, if any: stop() waits for it, as what it claims must be handed back. */
  private ticking: Promise<void> | null = null
  private tickAgain = false
  private state: 'new' | 'running' | 'stopped' = 'new'
  private recoveryDueAt = 0
  /** Processing paused (POST /processing/pause): it sleeps until resumed. Told of changes, and read from the store at each recovery. */
  private paused = false
  /** Changes told so far: a read under way when one is told is older than it. */
  private stateChanges = 0
  private heartbeat: NodeJS.Timeout | null = null
  /** Set while stop() waits for the attempts that started to be settled (attemptsUnderWay). */
  private allSettled: (() => void) | undefined
  private readonly renewals = new Set<Promise<void>>()
  private readonly now: () => number
  private readonly unsubscribe: () => void

  constructor (private readonly store: OrderStore, private readonly options: ProcessorOptions) {
    this.queue = new PQueue({ concurrency: options.concurrency })
    this.deadlines = new AttemptDeadlines(options.attemptTimeoutMs, (attempt) => this.timedOut(attempt))
    this.now = options.now ?? Date.now
    this.settles = new TickBatch({
      // An outcome the store refuses fails its own order only (settleOutcomes). Claims left unsettled
      // (the store unreachable) stay Processing; their leases expire and the orders are processed again.
      write: (outcomes) => settleOutcomes(outcomes, (some) => this.store.settle(some, this.now())),
      onError: (err) => this.options.onError?.(err, 'settling orders'),
      settled: (outcomes) => {
        for (const { claim } of outcomes) {
          this.inFlight.delete(claim)
          this.settling.delete(claim)
        }
        if (!this.attemptsUnderWay()) this.allSettled?.()
        this.wake()
      }
    })
    const stops = [
      store.onWork((availableAt) => this.wake(availableAt)),
      store.onProcessingState(({ state }) => {
        this.stateChanges++
        this.paused = state === 'paused'
        if (!this.paused) this.wake()
      })
    ]
    this.unsubscribe = () => { for (const stop of stops) stop() }
  }

  private get stopped (): boolean {
    return this.state !== 'running'
  }

  /** Starts claiming. A processor runs once: after stop() make a new one. */
  start (): void {
    if (this.state !== 'new') throw new Error(`processor already ${this.state}`)
    this.state = 'running'
    // Unref'd: it keeps nothing alive by itself (running attempts do, by their deadline's timer).
    this.heartbeat = setInterval(() => this.renewLeases(), this.options.leaseMs / RENEWALS_PER_LEASE).unref()
    this.wake()
  }

  /** Renews the leases of every claim held; started on time even while an earlier renewal is still under way. */
  private renewLeases (): void {
    if (this.inFlight.size === 0) return
    const renewal: Promise<void> = this.store.extendLeases([...this.inFlight.keys()], this.now(), this.options.leaseMs).then(
      (lost) => {
        this.renewals.delete(renewal)
        this.abandon(lost)
      },
      (err: unknown) => {
        this.renewals.delete(renewal)
        this.options.onError?.(err, 'renewing leases')
      })
    this.renewals.add(renewal)
  }

  /** Asks for a claim attempt at `at` (now by default), unless one is due sooner. */
  wake (at = this.now()): void {
    if (this.stopped) return
    const delay = at - this.now()
    if (delay <= 0) {
      if (this.tickScheduled) return
      this.tickScheduled = true
      setImmediate(() => { this.tickScheduled = false; this.tick() })
      return
    }
    if (at >= this.timerAt) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(() => { this.timer = null; this.timerAt = Infinity; this.tick() }, Math.min(delay, MAX_TIMER_MS))
    this.timer.unref()
  }

  private tick (): void {
    if (this.ticking) { this.tickAgain = true; return }
    this.ticking = this.claimWhileAsked().finally(() => { this.ticking = null })
  }

  private async claimWhileAsked (): Promise<void> {
    try {
      do {
        this.tickAgain = false
        if (this.stopped) return
        await this.claimAndRun()
      } while (this.tickAgain)
    } catch (err) {
      this.options.onError?.(err, 'claiming orders')
      this.wake(this.now() + STORE_RETRY_MS)
    }
  }

  private async claimAndRun (): Promise<void> {
    const { store, options } = this
    const now = this.now()
    if (now >= this.recoveryDueAt) {
      this.recoveryDueAt = now + Math.min(RECOVERY_INTERVAL_MS, options.leaseMs / 2)
      // This process's own claims are still being worked on, however late their settle comes.
      await store.recoverExpired(now, options.maxAttempts, this.heldTokens())
      // The state at start, and a change whose announcement was lost.
      const told = this.stateChanges
      const { state } = await store.processingState()
      if (told === this.stateChanges) this.paused = state === 'paused'
    }
    // The claim would take nothing: the resume wakes it, or else the next recovery.
    if (this.paused) {
      this.wake(this.recoveryDueAt)
      return
    }
    // Claims whose work is done take no place while they are settled, so the next claim runs
    // beside that settle; at most one batch's worth (`concurrency`) waits to be settled.
    const held = this.inFlight.size + this.overrunning.size
    const running = held - this.settling.size
    const free = Math.min(options.concurrency - running, 2 * options.concurrency - held)
    if (free <= 0) return // a finishing order wakes us
    const claims = await store.claim(free, now, options.leaseMs, options.readsOrders)
    const attempts = claims.map((claim) => new Attempt(claim))
    for (const attempt of attempts) this.inFlight.set(attempt.claim, attempt)
    // Claimed while stopping: stop() hands them back with the other unfinished ones.
    if (this.stopped) return
    for (const attempt of attempts) void this.queue.add(() => this.run(attempt))
    if (claims.length < free) {
      // Timers can fire a little early: never ask for a wake-up at a time already past.
      const next = await store.nextAvailableAt()
      if (next !== null) this.wake(Math.max(next, this.now() + 1))
    }
    // Orders of workers that died are looked for even when no order of ours becomes claimable.
    this.wake(this.recoveryDueAt)
  }

  /** Whether an attempt has started whose outcome is not settled yet (running, or recorded and being settled). */
  private attemptsUnderWay (): boolean {
    return this.deadlines.size > 0 || this.settling.size > 0
  }

  /** The tokens of the claims this process holds: those of claims with an order still running or being settled. */
  private heldTokens (): string[] {
    return [...new Set(Array.from(this.inFlight.keys(), (claim) => claim.token))]
  }

  private async run (attempt: Attempt): Promise<void> {
    if (attempt.aborted) return // its claim lost before it started (abandon)
    this.deadlines.add(attempt)
    const ended = await (tracingOn
      ? traceAttempt(attempt.claim, () => outcomeOf(this.options.work, attempt), (ended) => this.statusAfter(attempt.claim, ended))
      : outcomeOf(this.options.work, attempt))
    if (this.overrunning.delete(attempt)) {
      this.wake() // its place is free
      return
    }
    this.deadlines.delete(attempt)
    this.record(attempt, ended)
  }

  /**
   * Claims no longer this process's, their leases having ended (a process stalled past its lease, by
   * a freeze or a store slower than it): the attempts still running are aborted, as another process
   * may be running the same orders and their outcomes would be refused. Until its work returns, an
   * attempt that started keeps its place in p-queue and counts against the capacity, as one that
   * timed out does.
   */
  private abandon (lost: readonly Claim[]): void {
    const running = lost.filter((claim) => this.inFlight.has(claim) && !this.settling.has(claim))
    if (running.length === 0) return
    const reason = new DOMException('the order\'s lease ended and another process took it over', 'AbortError')
    for (const claim of running) {
      const attempt = this.inFlight.get(claim) as Attempt
      this.inFlight.delete(claim)
      // One still waiting in p-queue never starts (run).
      if (attempt.deadline !== Infinity) {
        this.deadlines.delete(attempt)
        this.overrunning.add(attempt)
      }
      attempt.abort(reason)
    }
    if (!this.attemptsUnderWay()) this.allSettled?.()
    this.wake()
    this.options.onError?.(new Error(`the leases of ${running.length} order${running.length === 1 ? '' : 's'} ended before their attempts did, and were taken over: ` +
      `their attempts were aborted (${running.slice(0, 3).map((claim) => claim.order_id).join(', ')}${running.length > 3 ? ', ...' : ''})`), 'renewing leases')
  }

  /** Past its deadline: the attempt fails now, whatever its work does later, and its signal aborts. */
  private timedOut (attempt: Attempt): void {
    const error = `attempt timed out after ${this.options.attemptTimeoutMs} ms`
    this.overrunning.add(attempt)
    this.record(attempt, { ok: false, error, retryable: true })
    attempt.abort(new DOMException(error, 'TimeoutError'))
  }

  private record (attempt: Attempt, ended: AttemptOutcome): void {
    const { claim } = attempt
    if (!this.inFlight.has(claim)) return // handed back at shutdown
    this.settles.add(this.outcome(claim, ended))
    this.settling.add(claim)
    this.wake() // its place is free
  }

  /** What an outcome makes of the order (for its span). */
  private statusAfter (claim: Claim, ended: AttemptOutcome): OrderStatus {
    const outcome = this.outcome(claim, ended)
    return outcome.ok ? 'Completed' : outcome.retryAt === null ? 'Failed' : 'Pending'
  }

  /** What the store records: a failure is retried with backoff while attempts are left, unless it says it must not be. */
  private outcome (claim: Claim, ended: AttemptOutcome): Outcome {
    if (ended.ok) return { claim, ok: true, result: ended.result }
    const { maxAttempts, retryBackoffMs } = this.options
    const retryAt = ended.retryable && claim.attempts < maxAttempts ? this.now() + retryBackoffMs * 2 ** (claim.attempts - 1) : null
    return { claim, ok: false, error: ended.error, retryAt }
  }

  /**
   * Stops claiming, lets running orders finish within `graceMs`, settles them, then aborts the
   * attempts still running (through their signals) and hands their claims back to the store,
   * uncounted, so that they are processed again at once; it does not wait for those attempts to end.
   * Leases are renewed until then. Rejects, saying how many, when the store would not take them
   * back: they wait for their leases.
   */
  async stop (graceMs: number): Promise<void> {
    const wasRunning = this.state === 'running'
    this.state = 'stopped'
    this.unsubscribe()
    if (!wasRunning) return
    if (this.timer) clearTimeout(this.timer)
    this.queue.clear()
    try {
      // A claim already sent to the store may still commit orders to this process.
      await this.ticking
      // Waits for the attempts that started to be settled, not for p-queue to empty: an attempt
      // that timed out is settled (its order Pending or Failed) but its work may ignore its signal
      // and run on; the grace is not spent on it (with a step ignoring its signal for a minute, the
      // stop took the whole grace). Nor on the claims no attempt started for (cleared from the
      // queue, or claimed while stopping), which are handed back: a worker stopped under a backlog
      // waited for the 1,000 of the claim it had under way, the whole grace (10 s) every time.
      let graceTimer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((resolve) => {
          this.allSettled = resolve
          if (!this.attemptsUnderWay()) resolve()
        }),
        new Promise((resolve) => { graceTimer = setTimeout(resolve, graceMs) })
      ])
      this.allSettled = undefined
      clearTimeout(graceTimer)
      await this.settles.drained()
      await this.handBack()
    } finally {
      this.deadlines.clear()
      clearInterval(this.heartbeat ?? undefined)
      await Promise.all(this.renewals)
    }
  }

  /** Aborts the attempts still running and hands their claims back; what they do afterwards is ignored. */
  private async handBack (): Promise<void> {
    const unfinished = [...this.inFlight]
    this.inFlight.clear()
    this.settling.clear()
    if (unfinished.length === 0) return
    for (const [, attempt] of unfinished) attempt.abort(new DOMException('the service is shutting down', 'AbortError'))
    try {
      await this.store.release(unfinished.map(([claim]) => claim), this.now())
    } catch (err) {
      throw new Error(`could not hand back ${unfinished.length} claimed orders, they return to Pending when their leases end: ${(err as Error).message}`, { cause: err })
    }
  }
}
