import { Type } from '@sinclair/typebox'

/** A string from a fixed list, as one JSON Schema `enum` (a union of literals gives poor error messages). */
export function StringEnum<const T extends readonly string[]> (values: T, options: { default?: T[number], description?: string } = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })
}
