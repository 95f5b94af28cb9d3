import { mkdirSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { tempDir } from './helper.ts'
import { compiledWhenCurrent } from './support/server-process.ts'

/** A package folder with src/server.ts, plugins/a.ts and their build, each file's time given in seconds. */
function aPackage (t: Test, times: { server: number, plugin: number, build?: number, compiled?: boolean }): string {
  const root = tempDir(t)
  const write = (path: string, seconds: number) => {
    mkdirSync(join(root, path, '..'), { recursive: true })
    writeFileSync(join(root, path), '')
    utimesSync(join(root, path), seconds, seconds)
  }
  write('src/server.ts', times.server)
  write('plugins/nested/a.ts', times.plugin)
  if (times.compiled !== false) write('dist/src/server.js', 100)
  if (times.build !== undefined) write('dist/.tsbuildinfo', times.build)
  return root
}

t.test('a server process runs the compiled entry point only when dist/ was built after every source', async (t) => {
  t.equal(compiledWhenCurrent('src/server.ts', aPackage(t, { server: 10, plugin: 20, build: 30 })), 'dist/src/server.js', 'built after every source')
  t.equal(compiledWhenCurrent('src/server.ts', aPackage(t, { server: 40, plugin: 20, build: 30 })), 'src/server.ts', 'the entry point changed since')
  t.equal(compiledWhenCurrent('src/server.ts', aPackage(t, { server: 10, plugin: 40, build: 30 })), 'src/server.ts', 'a file in a subfolder of plugins/ changed since')
  t.equal(compiledWhenCurrent('src/server.ts', aPackage(t, { server: 10, plugin: 20 })), 'src/server.ts', 'never built')
  t.equal(compiledWhenCurrent('src/server.ts', aPackage(t, { server: 10, plugin: 20, build: 30, compiled: false })), 'src/server.ts', 'built without this entry point')
  t.equal(compiledWhenCurrent('dist/src/server.js', aPackage(t, { server: 40, plugin: 20, build: 30 })), 'dist/src/server.js', 'a compiled entry point asked for is kept')
})
