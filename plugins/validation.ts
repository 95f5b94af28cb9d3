import fp from 'fastify-plugin'
import { Ajv, type ErrorObject } from 'ajv'
import { describeError } from '../src/http/validation-errors.ts'
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

/** Strict JSON bodies, converted query strings, and error messages that name the field. */
export default fp(async (app) => {
  const body = bodyAjv()
  const url = urlAjv()
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? body : url).compile(schema))
  // Bodies are JSON only: anything else is a 415, not a string that fails validation later.
  app.removeContentTypeParser('text/plain')
  app.setSchemaErrorFormatter((errors, dataVar) => new Error(describeError(errors[0] as ErrorObject, dataVar)))
}, { name: 'validation' })
