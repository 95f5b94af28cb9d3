import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import t from 'tap'
import { build } from './helper.ts'

const CHROMIUM = '/usr/bin/chromium'
// Flags that keep Chromium from reaching out to the network this machine does not have.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']
const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT ?? join(tmpdir(), 'dashboard.png')

t.test('the dashboard shows orders created through the API, live', {
  skip: existsSync(CHROMIUM) ? false : `no ${CHROMIUM}: apt-get install chromium (.ci/run does) to run the browser test`
}, async (t) => {
  const app = await build(t, { PROCESSING_TIME_MS: '200-400' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  t.teardown(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1200, height: 640 } })
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('requestfailed', (request) => { if (!request.url().endsWith('/orders/stream')) errors.push(`failed: ${request.url()}`) })

  await page.goto(`${address}/dashboard`)
  await page.waitForFunction(() => document.getElementById('live')?.textContent === 'live')
  await page.waitForFunction(() => document.getElementById('count-Completed')?.textContent === '0')

  const populated = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 60, batch_id: 'ui' } })
  t.equal(populated.statusCode, 201)
  await page.waitForFunction(() => document.getElementById('count-Processing')?.textContent !== '0', undefined, { timeout: 15_000 })
  await page.waitForFunction(() => document.getElementById('count-Completed')?.textContent === '60', undefined, { timeout: 15_000 })
  t.equal(await page.textContent('#backlog'), '0')
  // The chart is redrawn once a second from the completions the stream reported.
  await page.waitForFunction(() => {
    const { Chart } = window as unknown as { Chart: { getChart: (id: string) => { data: { datasets: Array<{ data: number[] }> } } } }
    return Chart.getChart('throughput').data.datasets[0]!.data.reduce((sum, n) => sum + n, 0) === 60
  }, undefined, { timeout: 5_000 })
  t.pass('every completion is on the chart')
  t.match(await page.textContent('#routes'), /POST \/orders\/populate/, 'p99 per route')
  await page.screenshot({ path: SCREENSHOT })
  t.pass(`screenshot saved to ${SCREENSHOT}`)
  t.same(errors, [], 'no script errors, no failed requests')
})
