import { execFileSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'

/** What `npm audit --json` prints: a report, or, when the registry would not audit, the failed request. */
export interface AuditOutput {
  metadata?: { vulnerabilities: Record<string, number>, dependencies?: { prod?: number } }
  vulnerabilities?: Record<string, { severity: string, range: string, via: Array<string | { title?: string, url?: string }> }>
  message?: string
}

export interface Verdict {
  outcome: 'clean' | 'vulnerable' | 'not checked'
  lines: string[]
}

export function judgeAudit (output: AuditOutput): Verdict {
  if (output.metadata === undefined) {
    // npm exits 0 and prints the request it tried when the registry serves no advisories (a mirror, a proxy).
    return { outcome: 'not checked', lines: [`npm audit: NOT CHECKED: the registry gave no advisories (${output.message ?? 'no report'})`] }
  }
  const found = Object.entries(output.vulnerabilities ?? {})
  if (found.length === 0) {
    const prod = output.metadata.dependencies?.prod
    return { outcome: 'clean', lines: [`npm audit: no known vulnerability in ${prod ?? 'the'} production dependencies`] }
  }
  return {
    outcome: 'vulnerable',
    lines: [
      `npm audit: ${found.length} vulnerable production ${found.length === 1 ? 'dependency' : 'dependencies'}:`,
      ...found.map(([name, v]) => {
        const advisories = v.via.map((via) => typeof via === 'string' ? `via ${via}` : `${via.title ?? ''} ${via.url ?? ''}`.trim())
        return `  ${name} ${v.range} (${v.severity}): ${advisories.join('; ')}`
      })
    ]
  }
}

function runAudit (): AuditOutput {
  try {
    return JSON.parse(execFileSync('npm', ['audit', '--omit=dev', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as AuditOutput
  } catch (err) {
    // npm exits non-zero when it finds vulnerabilities; its report is still on stdout.
    const stdout = (err as { stdout?: string }).stdout
    if (!stdout) throw err
    return JSON.parse(stdout) as AuditOutput
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const verdict = judgeAudit(runAudit())
  for (const line of verdict.lines) console.log(line)
  process.exitCode = verdict.outcome === 'vulnerable' ? 1 : 0
}
