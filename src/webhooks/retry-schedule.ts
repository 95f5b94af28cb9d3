/** Standard Webhooks' reference schedule: the waits after the 1st to 7th failed attempt; when the 8th fails, the delivery has failed. */
export const STANDARD_SCHEDULE = '5s,5m,30m,2h,5h,10h,10h'

/** A comma-separated list of durations with a unit: 500ms, 5s, 5m, 2h. */
export const SCHEDULE_PATTERN = '^ *[0-9]{1,9}(ms|s|m|h) *(, *[0-9]{1,9}(ms|s|m|h) *)*$'

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Each wait may be this much shorter or longer, at random, so that deliveries that failed together are not retried together. */
const JITTER = 0.2

/** The waits of a schedule in milliseconds; the text matches SCHEDULE_PATTERN. */
export function parseSchedule (text: string): number[] {
  return text.split(',').map((step) => {
    const [, amount, unit] = /([0-9]+)(ms|s|m|h)/.exec(step) as RegExpExecArray
    return Number(amount) * (UNIT_MS[unit as string] as number)
  })
}

/** How long to wait after failed attempt number `attempt` (from 1), jittered; null when it was the last. */
export function retryDelay (schedule: readonly number[], attempt: number, random = Math.random): number | null {
  const wait = schedule[attempt - 1]
  return wait === undefined ? null : Math.round(wait * (1 - JITTER + 2 * JITTER * random()))
}
