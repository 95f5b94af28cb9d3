import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

/** What `node --cpu-prof` writes (the fields read here). */
interface CpuProfile {
  nodes: Array<{ id: number, callFrame: { functionName: string, url: string, lineNumber: number } }>
  samples: number[]
  timeDeltas: number[]
}

export interface Frame { frame: string, selfPercent: number }

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Node's arguments that make a process write a CPU profile into `dir` when it exits (NODE_OPTIONS may not carry them). */
export function profilingArgs (dir: string): string[] {
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`]
}

/** Where a frame is: the project's own files relative to it, a package by its name, Node's own as is. */
function place (url: string, line: number): string {
  if (url === '') return ''
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)
  const where = inPackage ? inPackage[1]! : path.startsWith(ROOT) ? relative(ROOT, path) : path
  return ` ${where}:${line + 1}`
}

/**
 * The `top` frames by self time over every profile in `dir` (each process's, summed), in percent
 * of the time not idle: where the processes' cores went.
 */
export function topFrames (dir: string, top: number): Frame[] {
  const selfUs = new Map<string, number>()
  let busyUs = 0
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.cpuprofile'))) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile
    const frames = new Map(profile.nodes.map(({ id, callFrame: { functionName, url, lineNumber } }) =>
      [id, `${functionName || '(anonymous)'}${place(url, lineNumber)}`]))
    profile.samples.forEach((id, i) => {
      const frame = frames.get(id)!
      if (frame === '(idle)') return
      const us = profile.timeDeltas[i] ?? 0
      busyUs += us
      selfUs.set(frame, (selfUs.get(frame) ?? 0) + us)
    })
  }
  return [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([frame, us]) => ({ frame, selfPercent: Math.round(us / busyUs * 1000) / 10 }))
}
