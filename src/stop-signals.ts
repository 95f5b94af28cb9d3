import closeWithGrace from 'close-with-grace'

const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const

/**
 * A stop signal within this time of the first is the same request, not a second one. Ctrl-C in a
 * terminal and systemd's default stop signal the whole process group, and npm relays the signal
 * once more: the copy reached the service 1-55 ms after the first (a busy event loop or a loaded
 * machine delays it). A person who means "exit now" signals again after seeing that the first did
 * not do it, which takes longer than a second.
 */
export const SAME_STOP_REQUEST_MS = 1000

interface Log {
  info (fields: object, message: string): void
  error (fields: unknown, message?: string): void
}

/**
 * On SIGTERM or SIGINT (or an uncaught error) runs `close` once, then exits: 0 if it succeeded,
 * 1 if it failed (the error logged in one line) or took longer than `timeoutMs`. Copies of the
 * signal that arrive with it are ignored; a stop signal sent later exits at once with 1.
 */
export function closeOnStopSignals (timeoutMs: number, log: Log, close: () => Promise<void>): void {
  // close-with-grace keeps the exit codes, the time limit and the handling of uncaught errors; the
  // stop signals are left to us, as it takes every repeat of a signal for a demand to exit at once.
  // SIGHUP too when the service already listens to it (API_KEYS_FILE reloads on it): it must not stop the process then.
  const skip = process.listenerCount('SIGHUP') > 0 ? [...STOP_SIGNALS, 'SIGHUP' as const] : [...STOP_SIGNALS]
  const closer = closeWithGrace({ delay: timeoutMs, skip, logger: log }, async ({ err }) => {
    if (err) log.error({ err }, 'closing after an uncaught error')
    await close()
  })
  let firstAt: number | undefined
  const onStopSignal = (signal: NodeJS.Signals) => {
    const now = performance.now()
    if (firstAt === undefined) {
      firstAt = now
      log.info({ signal }, 'shutting down')
      closer.close()
    } else if (now - firstAt < SAME_STOP_REQUEST_MS) {
      log.info({ signal, afterMs: Math.round(now - firstAt) }, 'the same stop request again: still shutting down')
    } else {
      log.error({ signal }, `second ${signal}, exiting`)
      process.exit(1)
    }
  }
  for (const signal of STOP_SIGNALS) process.on(signal, onStopSignal)
}
