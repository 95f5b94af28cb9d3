/** Cache slots for the part of a time up to its second: enough for the few seconds the orders being handled span. */
const SLOTS = 64
const cachedSeconds = new Float64Array(SLOTS).fill(NaN)
const cachedPrefixes: string[] = new Array<string>(SLOTS).fill('')

/**
 * Epoch milliseconds as Date#toISOString writes them (UTC, milliseconds, `Z`), with the part up to
 * the second cached: toISOString costs ~0.5 us, and an order has three or four times, mostly in the
 * same few seconds as the orders around it. toOrder went from 1.6 to ~0.3 us.
 */
export function isoTime (ms: number): string {
  const second = Math.floor(ms / 1000)
  const slot = second & (SLOTS - 1)
  if (cachedSeconds[slot] !== second) {
    cachedSeconds[slot] = second
    // "2026-02-21T15:00:17.000Z" without its "000Z".
    cachedPrefixes[slot] = new Date(second * 1000).toISOString().slice(0, -4)
  }
  const millis = ms - second * 1000
  return `${cachedPrefixes[slot] as string}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`
}
