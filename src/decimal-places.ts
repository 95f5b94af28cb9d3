/**
 * True when `value` is exactly the number that a decimal with no more places than `step`
 * (0.01: two places) parses to. Float division makes `value / step` inexact (59.99 / 0.01 is
 * 5998.999...), so the check scales to an integer and back instead.
 */
export function isDecimalMultiple (value: number, step: number): boolean {
  const scale = Math.round(1 / step)
  return Number.isFinite(value) && Math.round(value * scale) / scale === value
}
