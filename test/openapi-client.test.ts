import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import openapiTS, { astToString } from 'openapi-typescript'
import t from 'tap'
import ts from 'typescript'
import { PACKAGE_ROOT } from '../src/package-root.ts'
import { build } from './helper.ts'
import { OPERATION_IDS } from './support/operation-ids.ts'

interface Operation { parameters?: Array<{ in: string, required?: boolean }>, requestBody?: { content: Record<string, unknown> } }

/**
 * One call through openapi-fetch per operation in the document, passing only what the document
 * says is required: path parameters, required query parameters, and a JSON body where one is required. Every other
 * parameter must be optional, or the call does not compile.
 */
function clientCalls (paths: Record<string, Record<string, Operation>>): string[] {
  const calls: string[] = []
  for (const [path, operations] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const type = `paths[${JSON.stringify(path)}][${JSON.stringify(method)}]`
      const init: string[] = []
      // Path parameters, and a query only where one of its parameters is required (DELETE /orders?user_id=N).
      const params = ['path', 'query'].filter((where) => operation.parameters?.some((p) => p.in === where && (where === 'path' || p.required)))
      if (params.length > 0) init.push(`params: { ${params.map((where) => `${where}: {} as ${type}['parameters']['${where}']`).join(', ')} }`)
      if (operation.requestBody?.content['application/json']) {
        init.push(`body: {} as NonNullable<${type}['requestBody']>['content']['application/json']`)
      }
      calls.push(`void client.${method.toUpperCase()}(${JSON.stringify(path)}${init.length > 0 ? `, { ${init.join(', ')} }` : ''})`)
    }
  }
  return calls
}

t.test('a client generated from /docs/json compiles when it passes only the required fields, on every route', async (t) => {
  const app = await build(t, { PROCESSOR: 'off' })
  const document = (await app.inject({ url: '/docs/json' })).json()

  // Inside the package, so that the generated client resolves openapi-fetch from node_modules.
  const cache = join(PACKAGE_ROOT, 'node_modules', '.cache')
  mkdirSync(cache, { recursive: true })
  const dir = mkdtempSync(join(cache, 'openapi-client-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'package.json'), '{"type": "module"}')
  writeFileSync(join(dir, 'schema.ts'), astToString(await openapiTS(document)))
  const calls = clientCalls(document.paths)
  writeFileSync(join(dir, 'client.ts'), [
    "import createClient from 'openapi-fetch'",
    "import type { operations, paths } from './schema.ts'",
    "const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:3000' })",
    ...calls,
    // Generated clients name their methods by operationId: the stable names are in the types.
    `export type Named = [${OPERATION_IDS.map((id) => `operations['${id}']`).join(', ')}]`,
    // The check can fail: leaving out a required path parameter must not compile.
    '// @ts-expect-error order_id is required',
    "void client.GET('/orders/{order_id}')"
  ].join('\n'))

  const program = ts.createProgram([join(dir, 'client.ts')], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    allowImportingTsExtensions: true,
    skipLibCheck: true,
    types: []
  })
  const errors = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  t.same(errors, [], 'the generated client type-checks')
  t.ok(calls.includes('void client.GET("/orders/metrics")'), 'GET /orders/metrics without getOrderIds or limit')
  t.ok(calls.includes('void client.GET("/orders")'), 'GET /orders without limit')
})
