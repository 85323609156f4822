/**
 * Where a controller listens, what it tells peers, and how the DNS names in
 * peers' addresses become addresses to dial.
 *
 * - A controller binds one address (`--host`): an IP, a name (looked up
 *   once, at start), or a wildcard (`0.0.0.0`, `::`).
 * - It announces (libp2p's `addresses.announce`: identify, and the digests'
 *   `addrs`) its `--advertise` names and addresses with its p2p port; with
 *   none, the bound address; bound to a wildcard, this host's interface
 *   addresses other than loopback and link-local (never the wildcard itself:
 *   nobody can dial 0.0.0.0).
 * - A `/dns4`, `/dns6` or `/dns` address (bootstrap, digests) is looked up
 *   every time it is dialled, through `Resolve`: the system's resolver
 *   unless a test gives another.
 */
import { promises as dns } from 'node:dns'
import { isIP, isIPv4 } from 'node:net'
import { getThinWaistAddresses, isLinkLocal, isLoopback } from '@libp2p/utils'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'

/**
 * Looks a host name up: its IP addresses, in the order to try them. `family`
 * is 4 for `/dns4`, 6 for `/dns6`, 0 for `/dns` (either). Throws when the
 * name does not resolve.
 */
export type Resolve = (name: string, family: 0 | 4 | 6) => Promise<string[]>

/** The system's resolver (getaddrinfo: /etc/hosts, then DNS, as any other program on the host). */
export const systemResolve: Resolve = async (name, family) =>
  (await dns.lookup(name, { all: true, family })).map(a => a.address)

const WILDCARDS = new Set(['0.0.0.0', '::'])

/** True for `0.0.0.0` and `::`: bound to every interface. */
export function isWildcard (host: string): boolean {
  return WILDCARDS.has(host)
}

/** The multiaddr of an IP address or a host name and a TCP port: `/ip4`, `/ip6`, or `/dns` for a name. */
export function tcpAddr (host: string, port: number): string {
  const kind = isIP(host)
  return `/${kind === 4 ? 'ip4' : kind === 6 ? 'ip6' : 'dns'}/${host}/tcp/${port}`
}

/** The IP to bind for `host`: itself if an IP, else what the system resolves it to. */
export async function bindIp (host: string, resolve: Resolve = systemResolve): Promise<string> {
  if (isIP(host) !== 0) return host
  const [ip] = await resolve(host, 0)
  if (ip == null) throw new Error(`${host} resolves to no address`)
  return ip
}

/**
 * What a controller bound to `ip`:`port` announces (without its peer id):
 * its advertised hosts; else the bound address; bound to a wildcard, the
 * interface addresses peers on other hosts can reach (loopback and
 * link-local only if there is nothing else).
 */
export function announceAddrs (ip: string, port: number, advertise: string[]): string[] {
  if (advertise.length > 0) return [...new Set(advertise.map(h => tcpAddr(h, port)))]
  if (!isWildcard(ip)) return [tcpAddr(ip, port)]
  return routable(getThinWaistAddresses(multiaddr(tcpAddr(ip, port)), port)).map(String)
}

/** Drops loopback and link-local addresses, unless nothing else is left (a host with no network). */
export function routable (addrs: Multiaddr[]): Multiaddr[] {
  const out = addrs.filter(a => !isLoopback(a) && !isLinkLocal(a))
  return out.length > 0 ? out : addrs
}

/** The DNS name in a multiaddr and the address family it asks for; null for an IP address. */
export function dnsName (ma: Multiaddr): { name: string, family: 0 | 4 | 6 } | null {
  const c = ma.getComponents()[0]
  if (c?.value == null) return null
  if (c.name === 'dns4') return { name: c.value, family: 4 }
  if (c.name === 'dns6') return { name: c.value, family: 6 }
  if (c.name === 'dns') return { name: c.value, family: 0 }
  return null
}

/**
 * The addresses to dial for `ma`: itself unless it starts with a DNS name,
 * else one IP multiaddr per address the name resolves to now (the rest of
 * `ma`, its port and peer id, kept). Throws when the name does not resolve.
 */
export async function resolveAddr (ma: Multiaddr, resolve: Resolve): Promise<Multiaddr[]> {
  const name = dnsName(ma)
  if (name == null) return [ma]
  const rest = ma.getComponents().slice(1).map(c => c.value == null ? `/${c.name}` : `/${c.name}/${c.value}`).join('')
  const ips = [...new Set(await resolve(name.name, name.family))].filter(ip => isIP(ip) !== 0 && (name.family === 0 || isIP(ip) === name.family))
  if (ips.length === 0) throw new Error(`${name.name} resolves to no ${name.family === 0 ? '' : `IPv${name.family} `}address`)
  return ips.map(ip => multiaddr(`/${isIPv4(ip) ? 'ip4' : 'ip6'}/${ip}${rest}`))
}
