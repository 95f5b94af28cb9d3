import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { isStoreUnavailable } from '../src/store/store-errors.ts'
import { closeAfterAnswer } from './lingering-close.ts'

/** Seconds a client is told to wait when the store cannot be reached. */
const STORE_RETRY_AFTER_S = 2

export const ErrorSchema = Type.Object({ error: Type.String({ description: 'what went wrong, for a person to act on' }) })

const DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid input: the message names the field',
  401: 'No API key, or not one of the service\'s: send Authorization: Bearer <key>',
  403: 'A browser request from another site (Sec-Fetch-Site: cross-site, or an Origin other than Host) whose origin is not in ALLOWED_ORIGINS; ' +
    'or, with API keys, a key of scope read on an operation that needs write',
  404: 'Not found',
  413: 'Body larger than 1 MiB',
  415: 'Body is not JSON',
  421: 'Host is not a name of this service: listening on a loopback address, it answers to localhost, 127.0.0.1, [::1] and ALLOWED_HOSTS only',
  500: 'Unexpected failure; nothing about it is disclosed',
  503: 'Overloaded, or the store is unreachable: retry after Retry-After seconds'
}

/** Documented error responses, all `{"error": "..."}`, with a default description per status. */
export function errorResponses<const S extends readonly number[]> (...statuses: S): { [K in S[number]]: typeof ErrorSchema } {
  return Object.fromEntries(statuses.map((status) => [status, { ...ErrorSchema, description: DESCRIPTIONS[status] }])) as
    { [K in S[number]]: typeof ErrorSchema }
}

/** The error responses every route with a JSON body can send besides its own. */
export const BODY_ERRORS = [400, 413, 415, 500, 503] as const

/** Every error a client sees is `{"error": "..."}` JSON; a 5xx never carries internals. */
export function sendError (err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const status = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 500
  // 413, 415 and errors raised in hooks come before the body is read.
  closeAfterAnswer(request, reply)
  if (status === 500 && isStoreUnavailable(err)) {
    request.log.warn({ err, reqId: request.id, url: request.url }, 'store unavailable')
    return reply.code(503).header('retry-after', STORE_RETRY_AFTER_S).send({ error: 'Store unavailable: retry later' })
  }
  if (status === 503) return reply.code(503).send({ error: err.message }) // overload: said on purpose
  if (status >= 500) {
    request.log.error({ err, reqId: request.id, url: request.url }, 'request failed')
    return reply.code(status).send({ error: 'Internal server error' })
  }
  // Fastify's own message says only "Unsupported Media Type": say what to send instead.
  const message = err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'Unsupported Media Type: send the body as application/json' : err.message
  return reply.code(status).send({ error: message })
}

/** Errors Node's HTTP parser and timers raise before any route runs, by error code. */
const CLIENT_ERRORS: Record<string, [number, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout: the whole request must arrive within REQUEST_TIMEOUT_MS'],
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large: at most 16 KiB of headers']
}

/**
 * Answers a request the HTTP parser refused with the same `{"error": "..."}` JSON, then closes the
 * connection: after a lingering close, as the client may still be sending, except on a timeout.
 */
export function answerClientError (
  this: FastifyInstance, err: Error & { code?: string }, socket: Socket & { _httpMessage?: { headersSent: boolean } }
): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, message] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'Bad Request: not a valid HTTP/1.1 request']
  // A connection lingers after an answer (Node reports its parse error again for each chunk that
  // arrives) until REQUEST_TIMEOUT_MS, at the latest.
  if (this.lingeringClose.lingers(socket)) {
    if (status === 408) socket.destroy(err)
    return
  }
  const body = JSON.stringify({ error: message })
  // As Node does: not in the middle of a response already under way (an event stream), which would corrupt it.
  if (socket.writable && !socket._httpMessage?.headersSent) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
  }
  // A timeout ends the connection at once, and so does an error beside a response under way.
  if (socket.writable && !socket._httpMessage && status !== 408) this.lingeringClose.afterRawAnswer(socket)
  else socket.destroy(err)
}

export default fp(async (app) => {
  app.setErrorHandler<FastifyError>(sendError)
  app.setNotFoundHandler((request, reply) => {
    // A body Fastify has no parser for is not read before the 404.
    closeAfterAnswer(request, reply)
    return reply.code(404).send({ error: `Route ${request.method} ${request.url.split('?')[0]} not found` })
  })
}, { name: 'errors', dependencies: ['lingering-close'] })
