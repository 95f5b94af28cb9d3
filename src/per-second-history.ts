/** Seconds of history kept: the dashboard's chart shows the last five minutes. */
export const HISTORY_SECONDS = 300

/** The counts of the last HISTORY_SECONDS seconds, oldest first, from the second starting at `from` (epoch ms). */
export interface HistoryWindow { from: number, counts: number[] }

/**
 * Events per second over the last HISTORY_SECONDS, in a ring of one slot per second: adding costs
 * the same however many there are, and the memory is fixed (two arrays of 300 numbers). A slot is
 * reused once its second has left the window; an event older than the second its slot now holds
 * (heard late, from another process) is outside the window and dropped.
 */
export class PerSecondHistory {
  private readonly counts = new Uint32Array(HISTORY_SECONDS)
  /** The second (epoch s) each slot counts, -1 for none yet. */
  private readonly seconds = new Float64Array(HISTORY_SECONDS).fill(-1)

  add (atMs: number): void {
    const second = Math.floor(atMs / 1000)
    const slot = second % HISTORY_SECONDS
    const held = this.seconds[slot] as number
    if (held > second) return
    if (held < second) {
      this.seconds[slot] = second
      this.counts[slot] = 0
    }
    this.counts[slot]!++
  }

  /** The HISTORY_SECONDS seconds up to and including the one of `nowMs`; the last one is still counting. */
  window (nowMs: number): HistoryWindow {
    const first = Math.floor(nowMs / 1000) - HISTORY_SECONDS + 1
    const counts = Array.from({ length: HISTORY_SECONDS }, (_, i) => {
      const second = first + i
      const slot = second % HISTORY_SECONDS
      return this.seconds[slot] === second ? this.counts[slot] as number : 0
    })
    return { from: first * 1000, counts }
  }
}
