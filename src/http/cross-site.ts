import { BlockList, isIP } from 'node:net'

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** Whether a listening address serves this machine only: localhost, 127.0.0.0/8 or ::1. */
export function isLoopback (address: string): boolean {
  if (address.toLowerCase() === 'localhost') return true
  const family = isIP(address)
  return family !== 0 && LOOPBACK.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/** A name as it appears in a Host header, lower case: IPv6 addresses in brackets. */
function asHostName (name: string): string {
  return isIP(name) === 6 ? `[${name.toLowerCase()}]` : name.toLowerCase()
}

/** The items of a comma-separated list (a configuration value), without blanks. */
function items (list: string): string[] {
  return list.split(',').map((item) => item.trim()).filter((item) => item !== '')
}

/**
 * Which Host headers a service listening on `listenAddress` serves, or null when it serves all:
 * on a loopback address only localhost, 127.0.0.1, [::1], the address itself and `allowed`
 * (any port), so that a page whose DNS name was rebound to 127.0.0.1 gets nothing from it.
 */
export function hostRule (listenAddress: string, allowed: string): ((host: string) => boolean) | null {
  if (!isLoopback(listenAddress)) return null
  const names = new Set(['localhost', '127.0.0.1', '[::1]', asHostName(listenAddress), ...items(allowed).map(asHostName)])
  // Nearly every request carries the same Host: remembering the last one served avoids parsing it.
  let lastServed = ''
  return (host) => {
    if (host === lastServed) return true
    const colon = host.lastIndexOf(':')
    const name = colon > host.lastIndexOf(']') ? host.slice(0, colon) : host
    if (!names.has(name.toLowerCase())) return false
    lastServed = host
    return true
  }
}

/** An origin as browsers send it: lower case, without the scheme's default port. */
function asOrigin (origin: string): string {
  return origin.toLowerCase().replace(/^(http:\/\/.*):80$|^(https:\/\/.*):443$/, '$1$2')
}

/**
 * Whether a request is one a browser sent from another site: `Sec-Fetch-Site: cross-site`, or an
 * `Origin` whose host differs from `Host` (an opaque `Origin: null` included), unless its
 * origin is in `allowed`. Requests with neither header (curl, servers) are not.
 */
export function crossSiteRule (allowed: string): (host: string | undefined, origin: string | undefined, fetchSite: string | undefined) => boolean {
  const origins = new Set(items(allowed).map(asOrigin))
  return (host, origin, fetchSite) => {
    if (origin === undefined) return fetchSite === 'cross-site'
    const normalised = origin.toLowerCase()
    if (origins.has(normalised)) return false
    if (fetchSite === 'cross-site') return true
    const schemeEnd = normalised.indexOf('://')
    return schemeEnd < 0 || normalised.slice(schemeEnd + 3) !== host?.toLowerCase()
  }
}
