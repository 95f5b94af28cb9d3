import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import t from 'tap'
import { PACKAGE_ROOT as ROOT } from '../src/package-root.ts'
import { anOrder, tempDir, waitFor } from './helper.ts'
import { runToEnd, ServerProcess, withoutTapHook } from './support/server-process.ts'
import { SKIP_SQLITE_ONLY } from './support/pg-database.ts'

// Real processes, npm among them: longer than tap's 30 s for a file on a busy machine.
t.setTimeout(120_000)

/** `npm start` runs this compiled file; `npm test` builds it first (pretest). */
const SERVER = 'dist/src/server.js'

function start (env: Record<string, string>) {
  return runToEnd([process.execPath, SERVER], env)
}

const cases: Array<[Record<string, string>, string]> = [
  [{ PORT: '99999' }, 'Invalid configuration: PORT must be <= 65535'],
  [{ PENDING_DELAY_MS: 'soon' }, 'Invalid configuration: PENDING_DELAY_MS must be integer'],
  [{ DATABASE_URL: 'sqlite:/etc/passwd/orders.db' }, "Could not start: EEXIST: file already exists, mkdir '/etc/passwd'"]
]

for (const [env, line] of cases) {
  t.test(`${JSON.stringify(env)} stops the process with one line`, async (t) => {
    const result = start(env)
    t.equal(result.status, 1)
    t.equal(result.stderr, `${line}\n`)
    t.equal(result.stdout, '')
  })
}

/** Processing modules that cannot be used, and the line that says why (`path` is where the module is). */
const BAD_MODULES: Array<{ name: string, source?: string, why: (path: string) => string }> = [
  { name: 'missing.mjs', why: (path) => `names no file: ${path} does not exist` },
  {
    name: 'syntax-error.mjs',
    source: 'export default async (order) => {\n  return order.\n}\n',
    why: (path) => `could not be loaded: SyntaxError: Unexpected token '}' (node --check ${path} shows where)`
  },
  {
    name: 'throws-on-load.mjs',
    source: "if (!process.env.FULFILMENT_URL) throw new Error('FULFILMENT_URL is not set')\nexport default async () => {}\n",
    why: () => 'could not be loaded: FULFILMENT_URL is not set'
  },
  {
    name: 'no-default.mjs',
    source: 'export async function processOrder () {}\n',
    why: () => 'must have a function as its default export, (order, { signal, attempt, log }) => result; it has no default export (it exports: processOrder)'
  },
  {
    name: 'object-default.cjs',
    source: 'module.exports = { processOrder: async () => {} }\n',
    why: () => 'must have a function as its default export, (order, { signal, attempt, log }) => result; its default export is an object'
  }
]

t.test('a PROCESSOR_MODULE that cannot be used stops `node dist/src/server.js` and `npm run worker` with one line', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  for (const { name, source, why } of BAD_MODULES) {
    const path = join(dir, name)
    if (source !== undefined) writeFileSync(path, source)
    const line = `Invalid configuration: PROCESSOR_MODULE (${path}) ${why(path)}\n`
    const env = { PROCESSOR_MODULE: path, DATABASE_URL: 'sqlite::memory:' }
    const server = runToEnd([process.execPath, SERVER], env)
    t.same([server.status, server.stderr, server.stdout], [1, line, ''], `${name}: the server`)
    const worker = runToEnd(['npm', 'run', 'worker'], env)
    t.same([worker.status, worker.stderr], [1, line], `${name}: the worker`)
  }
})

t.test('`npm start` runs a PROCESSOR_MODULE given relative to its working directory, an ES or a CommonJS module', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'step.mjs'), 'export default async (order, { attempt }) => ({ shipped: order.order_id, attempt })\n')
  writeFileSync(join(dir, 'step.cjs'), 'module.exports = async (order) => ({ shipped: order.order_id, by: "cjs" })\n')
  for (const [name, result] of [['step.mjs', { shipped: 'rel-mjs', attempt: 1 }], ['step.cjs', { shipped: 'rel-cjs', by: 'cjs' }]] as const) {
    const server = await ServerProcess.startWithNpm({
      PROCESSOR_MODULE: relative(ROOT, join(dir, name)), DATABASE_URL: 'sqlite::memory:', PENDING_DELAY_MS: '0'
    })
    t.teardown(() => server.killGroup())
    const id = result.shipped
    t.equal((await server.request('/orders', anOrder(id))).status, 201)
    const order = await waitFor(async () => {
      const { json } = await server.request(`/orders/${id}`)
      return json.status === 'Completed' && json
    }, `${name}: the order to complete`)
    t.same(order.result, result, `${name}: its result`)
    server.signalGroup('SIGTERM')
    t.equal(await server.exited, 0)
  }
})

/** The command lines of a process and all its descendants, read from /proc. */
function processTree (pid: number): string[] {
  const parents = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // The parent pid is the 2nd field after the parenthesised command name.
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1])
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)])
    } catch { /* the process ended meanwhile */ }
  }
  const tree: string[] = []
  const visit = (p: number) => {
    try { tree.push(readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')) } catch { return }
    for (const child of parents.get(p) ?? []) visit(child)
  }
  visit(pid)
  return tree
}

t.test('npm start runs the compiled JavaScript with node, without a TypeScript loader', { skip: SKIP_SQLITE_ONLY }, async (t) => {
  const [file, ...args] = withoutTapHook(['npm', 'start'])
  const npm = spawn(file!, args, {
    cwd: ROOT, detached: true, env: { ...process.env, PORT: '0', DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'info' }
  })
  t.teardown(() => { if (npm.exitCode === null) process.kill(-npm.pid!, 'SIGKILL') })
  let output = ''
  npm.stdout.on('data', (chunk) => { output += chunk })
  await waitFor(() => output.includes('Server listening'), 'the server to listen', 30_000)
  const tree = processTree(npm.pid!)
  t.ok(tree.some((command) => /(^|\/)node dist\/src\/server\.js$/.test(command)), `node runs ${SERVER}: ${tree.join(' | ')}`)
  t.notOk(tree.some((command) => command.includes('tsx')), 'no tsx in the process tree')
  const exited = once(npm, 'exit')
  process.kill(-npm.pid!, 'SIGTERM')
  await exited
})
