import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
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
function place (url: string): string {
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)
  return inPackage ? inPackage[1]! : path.startsWith(ROOT) ? relative(ROOT, path) : path
}

/** The part of the code a frame is in: a package, a folder of the project, Node's own JavaScript, or none (native code, GC). */
function area (url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native: I/O and bindings)'
  const where = place(url)
  if (where.startsWith('node:')) return "Node's JavaScript"
  if (!where.includes('/')) return where
  return dirname(where.replace(/^dist\//, ''))
}

/**
 * Self time over every profile in `dir` (each process's and thread's, summed), in percent of the
 * time not idle, for the `top` frames and the `top` areas (see `area`): where the cores went.
 */
export function topFrames (dir: string, top: number): { frames: Frame[], areas: Frame[] } {
  const byFrame = new Map<string, number>()
  const byArea = new Map<string, number>()
  let busyUs = 0
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.cpuprofile'))) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile
    const nodes = new Map(profile.nodes.map(({ id, callFrame: { functionName, url, lineNumber } }) => [id, {
      frame: `${functionName || '(anonymous)'}${url === '' ? '' : ` ${place(url)}:${lineNumber + 1}`}`,
      area: area(url, functionName)
    }]))
    profile.samples.forEach((id, i) => {
      const node = nodes.get(id)!
      if (node.frame === '(idle)') return
      const us = profile.timeDeltas[i] ?? 0
      busyUs += us
      byFrame.set(node.frame, (byFrame.get(node.frame) ?? 0) + us)
      byArea.set(node.area, (byArea.get(node.area) ?? 0) + us)
    })
  }
  const ranked = (times: Map<string, number>) => [...times].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([frame, us]) => ({ frame, selfPercent: Math.round(us / busyUs * 1000) / 10 }))
  return { frames: ranked(byFrame), areas: ranked(byArea) }
}
