import diagnostics from 'node:diagnostics_channel'
import t from 'tap'
import { addressRefusal, checkDestination, type Resolve } from '../src/webhooks/destination.ts'
import { WebhookSender } from '../src/webhooks/sender.ts'

/** A resolver the test controls: no DNS query leaves the machine. */
const resolveTo = (...addresses: string[]): Resolve => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))

/** Counts the TCP client sockets Node creates while `fn` runs: none means no connection was even tried. */
async function socketsOpenedBy (fn: () => Promise<unknown>): Promise<number> {
  let sockets = 0
  const count = () => { sockets++ }
  diagnostics.subscribe('net.client.socket', count)
  try {
    await fn()
  } finally {
    diagnostics.unsubscribe('net.client.socket', count)
  }
  return sockets
}

t.test('only global unicast addresses pass; WEBHOOK_ALLOW_PRIVATE lets the private ranges through, never multicast or unspecified', async (t) => {
  const refused: Record<string, RegExp> = {
    '127.0.0.1': /loopback/,
    '127.8.9.10': /loopback/,
    '10.0.0.1': /private/,
    '172.16.5.4': /private/,
    '192.168.1.1': /private/,
    '169.254.169.254': /link-local/,
    '100.64.0.1': /carrier-grade NAT/,
    '0.0.0.0': /unspecified/,
    '224.0.0.1': /multicast/,
    '255.255.255.255': /broadcast/,
    '192.0.2.1': /special-purpose/,
    '::1': /loopback/,
    '::': /unspecified/,
    'fe80::1': /link-local/,
    'fc00::1': /private \(unique local\)/,
    'ff02::1': /multicast/,
    '::ffff:127.0.0.1': /127\.0\.0\.1 is a loopback/,
    '::ffff:10.0.0.1': /private/,
    '64:ff9b::a00:1': /NAT64 address carrying 10\.0\.0\.1, a private address/,
    '2002:a00:1::': /6to4 address carrying 10\.0\.0\.1, a private address/,
    '64:ff9b::808:808': /special-purpose \(rfc6052\)/,
    '2002:808:808::1': /special-purpose \(6to4\)/,
    '::127.0.0.1': /IPv4-compatible address \(deprecated, carrying 127\.0\.0\.1\)/,
    '::7f00:1': /carrying 127\.0\.0\.1/,
    '::a9fe:a9fe': /carrying 169\.254\.169\.254/,
    '::8.8.8.8': /IPv4-compatible/,
    '::ffff:169.254.169.254': /link-local/
  }
  for (const [address, reason] of Object.entries(refused)) t.match(addressRefusal(address, false), reason, address)
  for (const address of ['93.184.216.34', '8.8.8.8', '2606:4700::1111', '::ffff:8.8.8.8']) t.equal(addressRefusal(address, false), null, address)
  for (const address of ['127.0.0.1', '10.0.0.1', '169.254.169.254', '::1', 'fc00::1', '::ffff:192.168.0.1']) t.equal(addressRefusal(address, true), null, `${address}, allowed`)
  for (const address of ['64:ff9b::a00:1', '2002:a9fe:a9fe::1']) t.equal(addressRefusal(address, true), null, `${address}, allowed`)
  for (const address of ['0.0.0.0', '224.0.0.1', '::', 'ff02::1', '::127.0.0.1', '::a9fe:a9fe', '64:ff9b::e000:1', '2002:e000:1::1']) {
    t.ok(addressRefusal(address, true), `${address}, never`)
  }
})

t.test('a host name is refused when any address it resolves to is refused', async (t) => {
  const rules = (resolve: Resolve) => ({ allowPrivate: false, resolve })
  await t.rejects(checkDestination('https://hooks.example/x', rules(resolveTo('10.1.2.3'))), { message: /hooks\.example resolves to a refused address \(10\.1\.2\.3 is a private address\)/ })
  await t.rejects(checkDestination('https://hooks.example/x', rules(resolveTo('93.184.216.34', '169.254.169.254'))), { message: /link-local/ }, 'a public address beside it does not help')
  await t.rejects(checkDestination('https://hooks.example/x', rules(async () => { throw Object.assign(new Error('nope'), { code: 'ENOTFOUND' }) })), { message: /hooks\.example does not resolve \(ENOTFOUND\)/ })
  await t.rejects(checkDestination('https://hooks.example/x', rules(resolveTo())), { message: /does not resolve to any address/ })
  await t.rejects(checkDestination('gopher://hooks.example/x', rules(resolveTo('93.184.216.34'))), { message: /only http and https/ })
  t.match(await checkDestination('https://hooks.example:8443/x?y=1', rules(resolveTo('93.184.216.34'))), { address: '93.184.216.34', family: 4, url: { port: '8443' } })
  t.match(await checkDestination('http://[2606:4700::1111]/x', rules(resolveTo())), { address: '2606:4700::1111', family: 6 }, 'an address in the URL is not resolved')
})

t.test('delivery to a refused destination is decided before any socket is opened', async (t) => {
  for (const [what, url, resolve] of [
    ['a name resolving to a private address', 'http://internal.example/hook', resolveTo('10.1.2.3')],
    ['a name resolving to link-local (cloud metadata)', 'http://metadata.example/latest', resolveTo('169.254.169.254')],
    ['a name that resolved to a public address before, now rebound to loopback', 'http://rebound.example/hook', resolveTo('127.0.0.1')],
    ['a private address in the URL', 'http://192.168.1.20:8080/hook', resolveTo()],
    ['a link-local address in the URL', 'http://[fe80::1]/hook', resolveTo()],
    ['an IPv4-compatible loopback address in the URL', 'http://[::127.0.0.1]/hook', resolveTo()],
    ['an IPv4-compatible metadata address in the URL', 'http://[::a9fe:a9fe]/latest', resolveTo()],
    ['a name resolving to an IPv4-compatible address', 'http://compat.example/hook', resolveTo('::127.0.0.1')]
  ] as const) {
    const sender = new WebhookSender({ timeoutMs: 5000, allowPrivate: false, resolve })
    let result: unknown
    const sockets = await socketsOpenedBy(async () => { result = await sender.send(url, {}, '{}') })
    sender.close()
    t.match(result, { kind: 'refused', statusCode: null, error: /refused address/ }, what)
    t.equal(sockets, 0, `${what}: no socket was opened`)
  }
})

t.test('the connection goes to the address that was checked, not to a second resolution of the name', async (t) => {
  // The name "resolves" to loopback, where the test listens; the URL's port is closed anywhere else.
  const { createServer } = await import('node:http')
  const hosts: string[] = []
  const server = createServer((request, response) => { hosts.push(String(request.headers.host)); response.writeHead(204).end() })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const { port } = server.address() as { port: number }
  let resolutions = 0
  const sender = new WebhookSender({ timeoutMs: 5000, allowPrivate: true, resolve: async () => { resolutions++; return [{ address: '127.0.0.1', family: 4 }] } })
  t.teardown(() => sender.close())
  let result: unknown
  const sockets = await socketsOpenedBy(async () => { result = await sender.send(`http://receiver.test:${port}/hook`, {}, '{}') })
  t.match(result, { kind: 'delivered', statusCode: 204 })
  t.equal(sockets, 1, 'one socket: the count above would have seen one')
  t.equal(resolutions, 1, 'resolved once, by the check')
  t.same(hosts, [`receiver.test:${port}`], 'the Host header names the URL\'s host')
})
