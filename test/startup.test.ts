import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { PACKAGE_ROOT as ROOT } from '../src/package-root.ts'
import { waitFor } from './helper.ts'

/** `npm start` runs this compiled file; `npm test` builds it first (pretest). */
const SERVER = 'dist/src/server.js'

function start (env: Record<string, string>) {
  return spawnSync(process.execPath, [SERVER], {
    cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000
  })
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

t.test('npm start runs the compiled JavaScript with node, without a TypeScript loader', async (t) => {
  const npm = spawn('npm', ['start'], {
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
