import { mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import { tempDir } from './helper.ts'
import { compiledWhenCurrent } from './support/server-process.ts'

const SOURCES = ['src/server.ts', 'plugins/nested/a.ts', 'routes/b.ts', 'tsconfig.json', 'tsconfig.build.json', 'package.json']
const FOLDERS = ['src', 'plugins', 'plugins/nested', 'routes']

/**
 * A package folder whose sources, and their folders, last changed at second 1000, with a build
 * of src/server.ts stamped at second 2000; `change` then alters it.
 */
function aPackage (t: Test, change: (root: string) => void = () => {}): string {
  const root = tempDir(t)
  for (const file of [...SOURCES, 'dist/src/server.js', 'dist/.built']) {
    mkdirSync(join(root, dirname(file)), { recursive: true })
    writeFileSync(join(root, file), '')
  }
  for (const path of [...SOURCES, ...FOLDERS]) utimesSync(join(root, path), 1000, 1000)
  utimesSync(join(root, 'dist/.built'), 2000, 2000)
  change(root)
  return root
}

const at = (root: string, path: string, seconds: number) => utimesSync(join(root, path), seconds, seconds)

t.test('a server process runs the compiled entry point only when the build began after every change to what it compiles', async (t) => {
  const entry = (root: string) => compiledWhenCurrent('src/server.ts', root)
  t.equal(entry(aPackage(t)), 'dist/src/server.js', 'built after every change')
  t.equal(entry(aPackage(t, (root) => at(root, 'src/server.ts', 3000))), 'src/server.ts', 'the entry point changed since')
  t.equal(entry(aPackage(t, (root) => at(root, 'plugins/nested/a.ts', 3000))), 'src/server.ts', 'a file in a subfolder changed since')
  t.equal(entry(aPackage(t, (root) => at(root, 'routes', 3000))), 'src/server.ts', 'a file added to, removed from or renamed in a folder since (its mtime)')
  t.equal(entry(aPackage(t, (root) => at(root, 'tsconfig.json', 3000))), 'src/server.ts', 'the TypeScript configuration changed since')
  t.equal(entry(aPackage(t, (root) => at(root, 'package.json', 3000))), 'src/server.ts', 'package.json changed since')
  t.equal(entry(aPackage(t, (root) => rmSync(join(root, 'dist/.built')))), 'src/server.ts', 'never built, or the last build failed')
  t.equal(entry(aPackage(t, (root) => rmSync(join(root, 'dist/src/server.js')))), 'src/server.ts', 'built without this entry point')
  t.equal(entry(aPackage(t, (root) => {
    symlinkSync('user@host.1234', join(root, 'src/.#server.ts'))
    at(root, 'src', 1000)
  })), 'dist/src/server.js', 'a dangling link in a source folder (an editor\'s lock) is no change, and no error')
  t.equal(compiledWhenCurrent('dist/src/server.js', aPackage(t, (root) => at(root, 'src/server.ts', 3000))), 'dist/src/server.js', 'a compiled entry point asked for is kept')
})

// Under `npm test`, whose first step is `npm run build`: the processes tests start run that build.
t.test('under npm test, the build it began with is current', { skip: process.env.npm_lifecycle_event !== 'test' && 'run by npm test only (it builds first)' }, async (t) => {
  t.equal(compiledWhenCurrent('src/server.ts'), 'dist/src/server.js')
  t.equal(compiledWhenCurrent('src/worker.ts'), 'dist/src/worker.js')
})
