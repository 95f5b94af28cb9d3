import fp from 'fastify-plugin'
import { KeyRing, type KeyEntry, type Scope } from '../src/http/api-key.ts'
import { ConfigError, type Config } from '../src/config.ts'
import { readKeyFile, watchKeyFile } from '../src/http/key-file.ts'
import { SAFE_METHODS } from './cross-site.ts'
import { errorResponses } from './errors.ts'
import { closeAfterAnswer } from './lingering-close.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The name of the API key the request presented (never the key), for logs and traces; undefined when no key is needed. */
    apiKeyName: string | undefined
  }
}

/** Paths anyone may read: probes, the API's documentation and the dashboard page (its data needs the key). */
const OPEN = /^\/(health|ready|docs|dashboard)(\/|$|\?)/

/** The name of the OpenAPI security scheme of the key-protected operations. */
export const SECURITY_SCHEME = 'apiKey'

export const keysRequired = (config: Config) => config.API_KEY !== undefined || config.API_KEYS_FILE !== undefined

/** The scope a request of this method needs: whatever changes nothing is `read`. */
const scopeNeeded = (method: string): Scope => SAFE_METHODS.has(method) ? 'read' : 'write'

/**
 * With API_KEY or API_KEYS_FILE set, every other route needs `Authorization: Bearer <key>`, of
 * scope `write` unless it changes nothing. A request is authorized once, when it starts: a key
 * removed by a reload of the file while it runs (an upload, an event stream) does not cut it.
 */
export default fp(async (app) => {
  app.decorateRequest('apiKeyName', undefined)
  const { API_KEY, API_KEYS_FILE } = app.config
  if (!keysRequired(app.config)) return
  // API_KEY is one full-access key beside the file's.
  const fixed: KeyEntry[] = API_KEY === undefined ? [] : [{ name: 'API_KEY', scope: 'write', key: API_KEY }]
  let keys = new KeyRing(fixed)
  if (API_KEYS_FILE !== undefined) {
    try {
      keys = new KeyRing([...fixed, ...readKeyFile(API_KEYS_FILE)])
    } catch (err) {
      throw new ConfigError((err as Error).message)
    }
    const stop = watchKeyFile(API_KEYS_FILE, {
      loaded: (entries) => {
        keys = new KeyRing([...fixed, ...entries])
        app.log.info({ keys: entries.map(({ name, scope }) => `${name} (${scope})`) }, `API keys reloaded from ${API_KEYS_FILE}`)
      },
      failed: (err) => { app.log.error(`API keys not reloaded, the previous ones stay: ${err.message}`) }
    })
    app.addHook('onClose', async () => { stop() })
  }

  app.addHook('onRequest', (request, reply, done) => {
    if (OPEN.test(request.url)) return done()
    const key = keys.find(request.headers.authorization)
    if (key === null) {
      closeAfterAnswer(request, reply)
      reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'Missing or wrong API key: send Authorization: Bearer <key>' })
      return
    }
    // Named before the scope check: a refused request's log line and span say whose key it was.
    request.apiKeyName = key.name
    if (key.scope === 'read' && scopeNeeded(request.method) === 'write') {
      closeAfterAnswer(request, reply)
      reply.code(403).send({ error: `Forbidden: the API key "${key.name}" has scope read; ${request.method} ${request.routeOptions.url ?? request.url} needs scope write` })
    } else {
      done()
    }
  })

  // The document says which operations need a key, and which scope: OpenAPI 3.1 lets an http scheme name roles.
  app.addHook('onRoute', (route) => {
    if (route.schema?.response === undefined || OPEN.test(route.url)) return
    const scope = [route.method].flat().map(scopeNeeded).includes('write') ? 'write' : 'read'
    route.schema = {
      ...route.schema,
      security: [{ [SECURITY_SCHEME]: [scope] }],
      description: [route.schema.description, `Needs an API key of scope ${scope}${scope === 'read' ? ' or write' : ''}.`].filter(Boolean).join(' '),
      response: { ...route.schema.response as object, ...errorResponses(401), ...(scope === 'write' && errorResponses(403)) }
    }
  })
}, { name: 'api-key', dependencies: ['config', 'lingering-close'] })
