import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { PACKAGE_ROOT } from '../src/package-root.ts'

const PUBLIC = join(PACKAGE_ROOT, 'public')
// Served from the npm package: the page needs no CDN and works offline.
const CHART_JS = join(dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js')

const assets = {
  '/dashboard': { operationId: 'dashboard', type: 'text/html; charset=utf-8', body: readFileSync(join(PUBLIC, 'dashboard.html'), 'utf8') },
  '/dashboard/app.js': { operationId: 'dashboardScript', type: 'text/javascript; charset=utf-8', body: readFileSync(join(PUBLIC, 'dashboard.js'), 'utf8') },
  '/dashboard/chart.js': { operationId: 'dashboardChartScript', type: 'text/javascript; charset=utf-8', body: readFileSync(CHART_JS, 'utf8') }
}

const dashboard: FastifyPluginAsyncTypebox = async (app) => {
  for (const [url, asset] of Object.entries(assets)) {
    app.get(url, {
      schema: {
        operationId: asset.operationId,
        tags: ['operations'],
        summary: url === '/dashboard'
          ? 'A live page: counts, completions per second, stage times, p99 per route; orders to list, open, cancel and retry; ' +
            'pause and resume; webhook deliveries'
          : 'Dashboard asset',
        produces: [asset.type.split(';')[0] as string],
        response: { 200: Type.String() }
      }
    }, async (_request, reply) => reply.type(asset.type).header('cache-control', 'no-cache').send(asset.body))
  }
}

export default dashboard
