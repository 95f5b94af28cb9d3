import { execFileSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'

/**
 * What `npm audit --json` prints: a report; the HTTP error of a registry that serves no advisories
 * (a mirror, a proxy); or npm's own error (no lockfile, say).
 */
export interface AuditOutput {
  metadata?: { vulnerabilities: Record<string, number>, dependencies?: { prod?: number } }
  vulnerabilities?: Record<string, { severity: string, range: string, via: Array<string | { title?: string, url?: string }> }>
  statusCode?: number
  message?: string
  error?: { code?: string, summary?: string }
}

/** What a registry answers that does not serve advisories at all; any other error is an outage, a failure. */
const NO_ADVISORIES = [404, 405, 501]

export interface Verdict {
  outcome: 'clean' | 'vulnerable' | 'not checked' | 'failed'
  lines: string[]
}

export function judgeAudit (output: AuditOutput): Verdict {
  if (output.metadata === undefined && output.statusCode !== undefined && NO_ADVISORIES.includes(output.statusCode)) {
    return { outcome: 'not checked', lines: [`npm audit: NOT CHECKED: the registry gave no advisories (${output.message ?? output.statusCode})`] }
  }
  if (output.metadata === undefined) {
    const reason = output.message ?? output.error?.summary ?? output.error?.code ?? JSON.stringify(output)
    return { outcome: 'failed', lines: [`npm audit: FAILED to run: ${reason}`] }
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

function runAudit (): { stdout: string, stderr: string } {
  try {
    return { stdout: execFileSync('npm', ['audit', '--omit=dev', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), stderr: '' }
  } catch (err) {
    // npm exits 1 both when it finds vulnerabilities and when it cannot audit; the JSON is on stdout either way.
    const { stdout = '', stderr = '' } = err as { stdout?: string, stderr?: string }
    return { stdout, stderr }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { stdout, stderr } = runAudit()
  let verdict: Verdict
  try {
    verdict = judgeAudit(JSON.parse(stdout) as AuditOutput)
  } catch {
    verdict = { outcome: 'failed', lines: ['npm audit: FAILED: it printed no JSON report', stdout, stderr].filter(Boolean) }
  }
  for (const line of verdict.lines) console.log(line)
  if (verdict.outcome === 'failed' && stderr) console.log(stderr)
  process.exitCode = verdict.outcome === 'vulnerable' || verdict.outcome === 'failed' ? 1 : 0
}
