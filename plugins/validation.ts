import fp from 'fastify-plugin'
import { Ajv, type ErrorObject } from 'ajv'
import { isDecimalMultiple } from '../src/decimal-places.ts'

function bodyAjv (): Ajv {
  // Bodies are JSON and typed: "1" is not 1, and an unknown field is an error, not dropped.
  const ajv = new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false, verbose: true })
  ajv.removeKeyword('multipleOf')
  ajv.addKeyword({
    keyword: 'multipleOf',
    type: 'number',
    schemaType: 'number',
    validate: (step: number, value: number) => isDecimalMultiple(value, step),
    error: { message: (cxt) => `must have at most ${Math.round(-Math.log10(cxt.schema as number))} decimal places` }
  })
  return ajv
}

function urlAjv (): Ajv {
  // Query strings and path parameters are text: numbers in them are converted.
  return new Ajv({ coerceTypes: true, useDefaults: true, removeAdditional: false, allErrors: false, verbose: true })
}

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

/** Strict JSON bodies, converted query strings, and error messages that name the field. */
export default fp(async (app) => {
  const body = bodyAjv()
  const url = urlAjv()
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? body : url).compile(schema))
  // Bodies are JSON only: anything else is a 415, not a string that fails validation later.
  app.removeContentTypeParser('text/plain')
  app.setSchemaErrorFormatter((errors, dataVar) => new Error(describeError(errors[0] as ErrorObject, dataVar)))
}, { name: 'validation' })
