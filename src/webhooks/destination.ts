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

/** IPv6 ranges that carry an IPv4 address, and the bits where it sits. */
const EMBEDDING: Array<{ range: [ipaddr.IPv6, number], name: string, at: number }> = [
  { range: ipaddr.IPv6.parseCIDR('64:ff9b::/96'), name: 'NAT64', at: 96 },
  { range: ipaddr.IPv6.parseCIDR('2002::/16'), name: '6to4', at: 16 }
]
const IPV4_COMPATIBLE = ipaddr.IPv6.parseCIDR('::/96')

/** The IPv4 address `bits` bits into an IPv6 address. */
function ipv4At (address: ipaddr.IPv6, bits: number): ipaddr.IPv4 {
  const bytes = address.toByteArray().slice(bits / 8, bits / 8 + 4)
  return new ipaddr.IPv4(bytes)
}

/**
 * An address as the system reads it. ipaddr.js (2.5) reads an IPv6 address ending in dotted IPv4
 * as IPv4-mapped whatever comes before (::8.8.8.8 as ::ffff:8.8.8.8); the URL parser writes it
 * out in hex first (::808:808), as inet_pton reads it.
 */
function parseAddress (address: string): ipaddr.IPv4 | ipaddr.IPv6 {
  if (isIP(address) === 6 && address.includes('.') && URL.canParse(`http://[${address}]/`)) {
    return ipaddr.parse(new URL(`http://[${address}]/`).hostname.slice(1, -1))
  }
  return ipaddr.parse(address)
}

/**
 * Why an address may not receive webhooks, or null when it may; decided from the address alone.
 * Only global unicast addresses may, unless `allowPrivate`; IPv4 addresses written as IPv6
 * (::ffff:10.0.0.1) count as the IPv4 address; NAT64 and 6to4 addresses are refused when the IPv4 address they carry is refused, and
 * with every other special range (documentation...) unless `allowPrivate`. IPv4-compatible
 * addresses (::/96 but :: and ::1, deprecated by RFC 4291) are refused always: a system may
 * still reach the IPv4 address in them (::127.0.0.1), and no receiver is there otherwise.
 */
export function addressRefusal (address: string, allowPrivate: boolean): string | null {
  const refusal = kindRefused(parseAddress(address), allowPrivate)
  return refusal === null ? null : `${address} is ${refusal}`
}

/** What kind of refused address this is ("a private address"), or null. */
function kindRefused (parsed: ipaddr.IPv4 | ipaddr.IPv6, allowPrivate: boolean): string | null {
  if (parsed instanceof ipaddr.IPv6) {
    if (parsed.isIPv4MappedAddress()) return kindRefused(parsed.toIPv4Address(), allowPrivate)
    const embedding = EMBEDDING.find(({ range }) => parsed.match(range))
    if (embedding) {
      const ipv4 = ipv4At(parsed, embedding.at)
      const refusal = kindRefused(ipv4, allowPrivate)
      if (refusal !== null) return `a ${embedding.name} address carrying ${ipv4.toString()}, ${refusal}`
    } else if (parsed.match(IPV4_COMPATIBLE) && parsed.range() === 'unicast') {
      return `an IPv4-compatible address (deprecated, carrying ${ipv4At(parsed, 96).toString()})`
    }
  }
  const range = parsed.range()
  if (range === 'unicast' || (allowPrivate && !NEVER_A_HOST.has(range))) return null
  return `a ${RANGE_NAMES[range] ?? `special-purpose (${range})`} address`
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
