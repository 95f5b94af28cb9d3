import type { ErrorObject } from 'ajv'

/** One sentence a person can act on, naming the field, from an Ajv error. */
export function describeError (error: ErrorObject, dataVar: string): string {
  const where = `${dataVar}${error.instancePath}`
  switch (error.keyword) {
    case 'required':
      return `${where} is missing required field '${error.params.missingProperty as string}'`
    case 'additionalProperties':
      return `${where} has unknown field '${error.params.additionalProperty as string}'`
    case 'enum':
      return `${where} must be one of: ${(error.params.allowedValues as string[]).join(', ')}`
    case 'pattern': {
      const description = (error.parentSchema as { description?: string } | undefined)?.description
      return description ? `${where} is invalid: ${description}` : `${where} ${error.message ?? 'is invalid'}`
    }
    default:
      return `${where} ${error.message ?? 'is invalid'}`
  }
}
