import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { build, type Settings } from './helper.ts'
import { launchChromium, skipWithoutChromium as skip } from './support/chromium.ts'

const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT ?? join(tmpdir(), 'dashboard.png')

/** Serves the app on a port and opens its dashboard in Chromium; any script error or failed request is collected. */
async function openDashboard (t: Test, settings: Settings) {
  const app = await build(t, { PROCESSING_TIME_MS: '200-400', ...settings })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const browser = await launchChromium(t)
  const page = await browser.newPage({ viewport: { width: 1200, height: 640 } })
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('requestfailed', (request) => { if (!request.url().endsWith('/orders/stream')) errors.push(`failed: ${request.url()}`) })
  await page.goto(`${address}/dashboard`)
  return { app, page, errors }
}

const shows = (page: Page, id: string, value: string, timeout = 15_000) =>
  page.waitForFunction((want) => document.getElementById(want.id)?.textContent === want.value, { id, value }, { timeout })

t.test('the dashboard shows orders created through the API, live', { skip }, async (t) => {
  const { app, page, errors } = await openDashboard(t, {})
  await shows(page, 'live', 'live')
  await shows(page, 'count-Completed', '0')

  const populated = await app.inject({ method: 'POST', url: '/orders/populate', payload: { total_entries: 60, batch_id: 'ui' } })
  t.equal(populated.statusCode, 201)
  await page.waitForFunction(() => document.getElementById('count-Processing')?.textContent !== '0', undefined, { timeout: 15_000 })
  await shows(page, 'count-Completed', '60')
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

t.test('with API_KEY set, the dashboard asks for the key, then shows live data', { skip }, async (t) => {
  const key = 'a-long-enough-secret-key'
  const { app, page, errors } = await openDashboard(t, { API_KEY: key })
  await shows(page, 'live', 'needs the API key')
  t.equal(await page.textContent('#count-Completed'), '–', 'no data without the key')

  await page.fill('#key-form input[name=key]', 'une-clé-pas-en-ascii')
  await page.click('#key-form button')
  t.equal(await page.$eval('#key-form input[name=key]', (input) => (input as HTMLInputElement).validity.valid), false,
    'a key no HTTP header can carry is refused by the form')
  t.ok(await page.isVisible('#key-form'))

  await page.fill('#key-form input[name=key]', 'a-wrong-key-of-enough-length')
  await Promise.all([page.waitForResponse((res) => res.status() === 401), page.click('#key-form button')])
  await page.waitForSelector('#key-form', { state: 'visible' })
  t.equal(await page.textContent('#live'), 'needs the API key', 'a wrong key is asked for again')

  await page.fill('#key-form input[name=key]', key)
  await page.click('#key-form button')
  await shows(page, 'live', 'live')
  t.notOk(await page.isVisible('#key-form'))
  const populated = await app.inject({
    method: 'POST', url: '/orders/populate', payload: { total_entries: 20 }, headers: { authorization: `Bearer ${key}` }
  })
  t.equal(populated.statusCode, 201)
  await shows(page, 'count-Completed', '20')
  t.same(errors, [], 'no script errors, no failed requests')
})
