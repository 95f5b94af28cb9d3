import t from 'tap'
import { build } from './helper.ts'
import { launchChromium, skipWithoutChromium as skip } from './support/chromium.ts'

const KEY = 'a-long-enough-secret-key'

t.test('Swagger UI with API_KEY: Authorize takes the key, and "Try it out" on GET /orders sends it and gets 200', { skip }, async (t) => {
  // The overload guard off: this machine's load is not what this is about.
  const app = await build(t, { PROCESSOR: 'off', API_KEY: KEY, MAX_EVENT_LOOP_DELAY_MS: '0' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const browser = await launchChromium(t)
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } })
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()) })
  await page.goto(`${address}/docs`)

  await page.click('.auth-wrapper button.authorize')
  await page.fill('.auth-container input', KEY)
  await page.click('.auth-container button.authorize')
  await page.waitForSelector('.auth-container button[aria-label="Remove authorization"]', { timeout: 15_000 })
  // The scheme's description is Markdown: the key's placeholder must not be taken for an HTML tag and vanish.
  t.match(await page.textContent('.auth-container .renderedMarkdown'), 'Authorization: Bearer <key>')
  await page.click('.auth-container button.btn-done')

  await page.click('#operations-orders-listOrders .opblock-summary')
  await page.click('#operations-orders-listOrders button.try-out__btn')
  const [request] = await Promise.all([
    page.waitForRequest((request) => new URL(request.url()).pathname === '/orders', { timeout: 15_000 }),
    page.click('#operations-orders-listOrders button.execute')
  ])
  t.equal(await request.headerValue('authorization'), `Bearer ${KEY}`, 'the request carries the key')
  const status = await page.waitForSelector('#operations-orders-listOrders .live-responses-table tr.response .response-col_status', { timeout: 15_000 })
  t.equal((await status.textContent())?.trim(), '200', 'and is answered 200')
  t.same(errors, [], 'no script errors, nothing refused by the page\'s policy')
})
