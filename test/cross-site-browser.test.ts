import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type { FastifyInstance } from 'fastify'
import type { Page } from 'playwright-core'
import t from 'tap'
import { anOrder, build } from './helper.ts'
import { launchChromium, skipWithoutChromium as skip } from './support/chromium.ts'

/** What another site's page does: a form that posts to the service and a script that posts with no preflight. */
const ATTACK_PAGE = `<!doctype html><title>Win a prize</title>
<form id="form" method="post"><button>Claim</button></form>
<script>
  // mode: no-cors, no body, no content type: the request a browser sends to any site without asking.
  window.postNoCors = (url) => fetch(url, { method: 'POST', mode: 'no-cors' }).then(() => 'sent', (err) => err.message)
</script>`

interface Sent { status: number, origin: string | undefined, fetchSite: string | undefined }

/** Runs `act` in the page and returns what the service answered the request to `url`, and the headers it received. */
async function answerTo (app: FastifyInstance, page: Page, url: string, act: () => Promise<unknown>): Promise<Sent> {
  let received: IncomingHttpHeaders = {}
  const record = (req: IncomingMessage) => { if (url.endsWith(req.url ?? '')) received = req.headers }
  app.server.on('request', record)
  const [response] = await Promise.all([page.waitForResponse((res) => res.url() === url), act()])
  app.server.off('request', record)
  return { status: response.status(), origin: received.origin, fetchSite: received['sec-fetch-site'] as string | undefined }
}

t.test('in Chromium: pages of other sites cannot change orders, a rebound DNS name gets 421, the service\'s own pages can', { skip }, async (t) => {
  const app = await build(t, { PENDING_DELAY_MS: '60000', PROCESSOR: 'off' })
  const service = await app.listen({ port: 0, host: '127.0.0.1' })
  const port = new URL(service).port
  for (const id of ['B1', 'B2', 'B3', 'B4']) await app.inject({ method: 'POST', url: '/orders', payload: anOrder(id) })
  const statusOf = async (id: string) => (await app.inject({ url: `/orders/${id}` })).json().status as string

  // Another site: a server of its own on another port, reached as 127.0.0.1 and as evil.example.
  const other = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(ATTACK_PAGE)).listen(0, '127.0.0.1')
  await once(other, 'listening')
  t.teardown(() => other.close())
  const otherPort = (other.address() as { port: number }).port
  const browser = await launchChromium(t, ['--host-resolver-rules=MAP evil.example 127.0.0.1'])
  const page = await browser.newPage()

  // The same host on another port is the same site, but not the same origin.
  await page.goto(`http://127.0.0.1:${otherPort}/`)
  const sameSite = await answerTo(app, page, `${service}/orders/B1/cancel`, () => page.evaluate((url) => (window as any).postNoCors(url), `${service}/orders/B1/cancel`))
  t.same(sameSite, { status: 403, origin: `http://127.0.0.1:${otherPort}`, fetchSite: 'same-site' }, 'a no-cors POST from another port: 403')
  t.equal(await statusOf('B1'), 'Pending', 'B1 untouched')

  await page.goto(`http://evil.example:${otherPort}/`)
  const crossSite = await answerTo(app, page, `${service}/orders/B2/cancel`, () => page.evaluate((url) => (window as any).postNoCors(url), `${service}/orders/B2/cancel`))
  t.same(crossSite, { status: 403, origin: `http://evil.example:${otherPort}`, fetchSite: 'cross-site' }, 'a no-cors POST from another site: 403')
  const formPost = await answerTo(app, page, `${service}/orders/B2/cancel`, () => page.evaluate((url) => {
    const form = document.getElementById('form') as HTMLFormElement
    form.action = url
    form.submit()
  }, `${service}/orders/B2/cancel`))
  t.same(formPost, { status: 403, origin: `http://evil.example:${otherPort}`, fetchSite: 'cross-site' }, 'a form posted from another site: 403')
  t.match(await page.textContent('body'), /ALLOWED_ORIGINS/, 'the page shows the JSON error')
  t.equal(await statusOf('B2'), 'Pending', 'B2 untouched')

  // DNS rebinding: a page of evil.example:<the service's port> whose name now resolves to 127.0.0.1
  // reaches the service with same-origin requests (Chromium allows them: the page itself came from
  // 127.0.0.1). Its own load is already refused.
  const navigation = await page.goto(`http://evil.example:${port}/dashboard`)
  t.equal(navigation?.status(), 421, 'the rebound name is not served')
  const rebound = await page.evaluate(async () => {
    const cancel = await fetch('/orders/B3/cancel', { method: 'POST' })
    const read = await fetch('/orders/B3')
    return { cancel: cancel.status, read: read.status, error: (await read.json()).error }
  })
  t.match(rebound, { cancel: 421, read: 421, error: /ALLOWED_HOSTS/ }, 'neither changes nor reads')
  t.equal(await statusOf('B3'), 'Pending', 'B3 untouched')

  // The service's own pages (the dashboard, Swagger UI's "Try it out") post as before.
  await page.goto(`${service}/dashboard`)
  const own = await page.evaluate(async () => (await fetch('/orders/B4/cancel', { method: 'POST' })).status)
  t.equal(own, 200, 'a same-origin POST from the dashboard page')
  t.equal(await statusOf('B4'), 'Cancelled')
})
