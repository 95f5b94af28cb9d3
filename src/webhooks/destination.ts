import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import ipaddr from 'ipaddr.js'

/** A URL a webhook may not be sent to, or whose host does not resolve; the message says which and why. */
export class RefusedDestination extends Error {}

/** How a host name becomes addresses: the system's resolver, or one a test controls. */
export type Resolve = (hostname: string) => Promise<Array<{ address: string, family: number }>>

export const systemResolve: Resolve = (hostname) => lookup(hostname, { all: true, verbatim: true })

/** ipaddr.js range names, as a person reads them. */
const RANGE_NAMES: Record<string, string> = {
  loopback: 'loopback',
  private: 'private',
  uniqueLocal: 'private (unique local)',
  linkLocal: 'link-local',
  carrierGradeNat: 'shared (carrier-grade NAT)',
  unspecified: 'unspecified',
  multicast: 'multicast',
  broadcast: 'broadcast'
}
/** No receiver can be there, whatever WEBHOOK_ALLOW_PRIVATE says. */
const NEVER_A_HOST = new Set(['unspecified', 'multicast', 'broadcast'])

/**
 * Why an address may not receive webhooks, or null when it may. Only global unicast addresses
 * may, unless `allowPrivate`; IPv4 addresses written as IPv6 (::ffff:10.0.0.1) count as the IPv4
 * address, and every other special range (documentation, 6to4, NAT64...) is refused with the private ones.
 */
export function addressRefusal (address: string, allowPrivate: boolean): string | null {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6 = ipaddr.parse(address)
  if (parsed instanceof ipaddr.IPv6 && parsed.isIPv4MappedAddress()) parsed = parsed.toIPv4Address()
  const range = parsed.range()
  if (range === 'unicast' || (allowPrivate && !NEVER_A_HOST.has(range))) return null
  return `${address} is a ${RANGE_NAMES[range] ?? `special-purpose (${range})`} address`
}

/** A URL checked for sending, with the one address its host resolved to that the connection must use. */
export interface Destination {
  url: URL
  address: string
  family: 4 | 6
}

export interface DestinationRules {
  allowPrivate: boolean
  resolve: Resolve
}

/**
 * Checks a webhook URL and resolves its host once, refusing (RefusedDestination) anything but
 * http and https, and a host that is, or resolves to, a refused address: every address it resolves
 * to must pass, so a name cannot mix a public address with a private one. The connection then uses
 * the address checked here, so DNS cannot answer differently in between.
 */
export async function checkDestination (text: string, { allowPrivate, resolve }: DestinationRules): Promise<Destination> {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new RefusedDestination(`${text} is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RefusedDestination(`only http and https URLs are allowed, not ${url.protocol}`)
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  let addresses: Array<{ address: string, family: number }>
  if (isIP(host) !== 0) {
    addresses = [{ address: host, family: isIP(host) }]
  } else {
    try {
      addresses = await resolve(host)
    } catch (err) {
      throw new RefusedDestination(`${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
    if (addresses.length === 0) throw new RefusedDestination(`${host} does not resolve to any address`)
  }
  for (const { address } of addresses) {
    const refusal = addressRefusal(address, allowPrivate)
    if (refusal !== null) {
      throw new RefusedDestination(`${host} ${address === host ? 'is' : 'resolves to'} a refused address (${refusal}): webhooks may not target loopback, private or link-local networks unless WEBHOOK_ALLOW_PRIVATE=true`)
    }
  }
  const [first] = addresses as [{ address: string, family: number }]
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 }
}
