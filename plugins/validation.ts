import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
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

/** An integer in a query string or a path: decimal digits. */
const DECIMAL_INTEGER = /^-?[0-9]+$/

/**
 * Validates a query string or path parameters with their integers written in decimal: Ajv alone
 * converts whatever JavaScript's == takes for a number, so user_id=0x10, " 16" and 1e3 were 16, 16
 * and 1000 (DELETE /orders?user_id=0x10 erased user 16). Another form is refused as not an integer.
 */
function decimalIntegers (schema: object, validate: ValidateFunction): ValidateFunction {
  const { properties = {} } = schema as { properties?: Record<string, { type?: unknown }> }
  const integers = Object.entries(properties).filter(([, property]) => property.type === 'integer').map(([name]) => name)
  if (integers.length === 0) return validate
  const checked = ((data: Record<string, unknown> | null) => {
    for (const name of integers) {
      const value = data?.[name]
      if (typeof value === 'string' && !DECIMAL_INTEGER.test(value)) (data as Record<string, unknown>)[name] = 'not a decimal integer'
    }
    const valid = validate(data)
    checked.errors = validate.errors
    return valid
  }) as ValidateFunction
  return checked
}

function urlAjv (): Ajv {
  // Query strings and path parameters are text: numbers in them are converted.
  return new Ajv({ coerceTypes: true, useDefaults: true, removeAdditional: false, allErrors: false, verbose: true })
}

/** Marks a route schema whose body a client may leave out: the document then says requestBody.required false. */
export const BODY_OPTIONAL = 'x-body-optional'

/** preValidation of such a route: no body at all (curl -X POST) is taken as {}. */
export async function noBodyAsEmpty (request: FastifyRequest): Promise<void> {
  request.body ??= {}
}

function isJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

const protoKey = () => Object.assign(new Error('Body must not contain a __proto__ key (nor a constructor key holding prototype): they are refused, ' +
  'as they would change the prototype of objects'), { statusCode: 400 })

/** Strict JSON bodies, converted query strings, and error messages that name the field. */
export default fp(async (app) => {
  const body = bodyAjv()
  const url = urlAjv()
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? body.compile(schema) : decimalIntegers(schema, url.compile(schema))))
  // Bodies are JSON only: anything else is a 415, not a string that fails validation later.
  app.removeContentTypeParser('text/plain')
  // Fastify's parser refuses a __proto__ key (prototype poisoning) as "not valid JSON": say why instead.
  // Only a body already refused is parsed a second time.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser<string>('application/json', { parseAs: 'string' }, (request, text, done) => {
    void parseJson(request, text, (err, value) => {
      done(err !== null && (err as { code?: string }).code === 'FST_ERR_CTP_INVALID_JSON_BODY' && isJson(text) ? protoKey() : err, value)
    })
  })
  app.setSchemaErrorFormatter((errors, dataVar) => new Error(describeError(errors[0] as ErrorObject, dataVar)))
}, { name: 'validation' })
