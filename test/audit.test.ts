import t from 'tap'
import { judgeAudit } from '../scripts/audit.ts'

// Shapes of what npm 11 prints for `npm audit --omit=dev --json`.
const clean = {
  auditReportVersion: 2,
  vulnerabilities: {},
  metadata: {
    vulnerabilities: { info: 0, low: 0, moderate: 0, high: 0, critical: 0, total: 0 },
    dependencies: { prod: 97, dev: 467, optional: 40, peer: 0, peerOptional: 0, total: 563 }
  }
}

const vulnerable = {
  auditReportVersion: 2,
  vulnerabilities: {
    fastify: {
      name: 'fastify',
      severity: 'high',
      isDirect: true,
      via: [{
        source: 1103620,
        name: 'fastify',
        title: 'Fastify Content-Type header tab character allows body validation bypass',
        url: 'https://github.com/advisories/GHSA-mg2h-6x62-wpwc',
        severity: 'high',
        range: '>=5.0.0 <5.3.2'
      }],
      effects: ['@fastify/swagger'],
      range: '5.0.0 - 5.3.1',
      nodes: ['node_modules/fastify'],
      fixAvailable: true
    },
    '@fastify/swagger': { name: '@fastify/swagger', severity: 'high', isDirect: true, via: ['fastify'], effects: [], range: '9.0.0 - 9.5.0', nodes: [], fixAvailable: true }
  },
  metadata: { vulnerabilities: { info: 0, low: 0, moderate: 0, high: 2, critical: 0, total: 2 }, dependencies: { prod: 97 } }
}

const refused = {
  message: '405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
  method: 'POST',
  statusCode: 405,
  body: ''
}

t.test('a report with no vulnerability passes', async (t) => {
  t.same(judgeAudit(clean), { outcome: 'clean', lines: ['npm audit: no known vulnerability in 97 production dependencies'] })
})

t.test('a report with vulnerabilities fails and names each with its advisory', async (t) => {
  const verdict = judgeAudit(vulnerable)
  t.equal(verdict.outcome, 'vulnerable')
  t.same(verdict.lines, [
    'npm audit: 2 vulnerable production dependencies:',
    '  fastify 5.0.0 - 5.3.1 (high): Fastify Content-Type header tab character allows body validation bypass https://github.com/advisories/GHSA-mg2h-6x62-wpwc',
    '  @fastify/swagger 9.0.0 - 9.5.0 (high): via fastify'
  ])
})

t.test('a registry that serves no advisories is said loudly, not taken for a clean result', async (t) => {
  const verdict = judgeAudit(refused)
  t.equal(verdict.outcome, 'not checked')
  t.match(verdict.lines[0], /^npm audit: NOT CHECKED: .*405 Method Not Allowed/)
})

t.test('npm failing to audit at all (no lockfile) is a failure, not a pass', async (t) => {
  const verdict = judgeAudit({ message: 'This command requires an existing lockfile.', error: { code: 'ENOLOCK', summary: 'This command requires an existing lockfile.' } })
  t.same(verdict, { outcome: 'failed', lines: ['npm audit: FAILED to run: This command requires an existing lockfile.'] })
})

t.test('a registry error other than "no advisories here" (an outage) is a failure', async (t) => {
  t.equal(judgeAudit({ ...refused, statusCode: 503, message: '503 Service Unavailable' }).outcome, 'failed')
})
