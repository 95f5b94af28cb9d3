import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

function start (env: Record<string, string>) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
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
