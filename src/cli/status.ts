/**
 * `capmesh status`: one line per controller from its `/health` and `/mesh`
 * (state, workers, links, registry hash, which peers agree with it), and a
 * verdict for the whole mesh. Exit code 0 when every controller answered,
 * all hold the same registry, none is in self-preservation and none is
 * behind (anti-entropy with a peer keeps failing) and each one's primary
 * mesh key is accepted by every other; 1 otherwise, so scripts and health
 * checks can use it. Peers a controller refused (they hold the mesh key but
 * are not in its allow list) are listed under the table; they do not change
 * the exit code (anyone can knock).
 */
import { ConfigError } from '../errors.ts'
import type { HttpsClient } from '../utils/https-client.ts'
import type { HealthReply, MeshReply } from '../wire/index.ts'

export interface ControllerStatus {
  url: string
  /** Why it could not be asked (network, TLS, HTTP status); null if it answered. */
  error: string | null
  controllerId?: string
  status?: string
  workers?: { total: number, healthy: number }
  ownWorkers?: number
  /** Other controllers it is connected to / knows of. */
  peers?: { connected: number, known: number }
  registryHash?: string
  /** Controllers whose last digest showed the same registry hash as this one. */
  agreeing?: string[]
  meshKeyId?: string | null
  /** Every mesh key it accepts, the primary first. */
  meshKeyIds?: string[]
  /** Peers it refused because its allow list does not admit them, most recent first. */
  refused?: Array<{ peer: string, address: string | null, count: number, reason: string, lastAt: string }>
  /** `off`: it asks nobody who they are. */
  auth?: 'required' | 'off'
  /** Peers its anti-entropy exchanges keep failing with (state "behind"), and the last error with each. */
  behind?: Array<{ controller: string, reason: string, error: string }>
}

export interface MeshStatus {
  controllers: ControllerStatus[]
  /** Every controller answered, one registry hash among them, none in self-preservation. */
  ok: boolean
  summary: string
}

/** Asks every controller at once (each with its own timeout). */
export async function meshStatus (client: HttpsClient, urls: string[], timeoutMs = 5000): Promise<MeshStatus> {
  if (urls.length === 0) throw new ConfigError('give at least one --controller URL')
  for (const u of urls) {
    if (!/^https:\/\/[^\s/]+/.test(u)) throw new ConfigError(`--controller: "${u}" is not an https:// URL`)
  }
  const controllers = await Promise.all(urls.map(async url => await ask(client, url, timeoutMs)))
  const answered = controllers.filter(c => c.error == null)
  const hashes = new Set(answered.map(c => c.registryHash))
  const preserving = answered.filter(c => c.status === 'self_preservation').map(c => c.controllerId)
  const behind = answered.filter(c => (c.behind?.length ?? 0) > 0)
  const primaries = new Set(answered.map(c => c.meshKeyId))
  const parts = [`${answered.length} of ${controllers.length} controllers answered`, hashes.size <= 1 ? 'one registry (they agree)' : `${hashes.size} different registries`]
  if (preserving.length > 0) parts.push(`self-preservation on ${preserving.join(', ')}`)
  for (const c of behind) parts.push(`${c.controllerId} is behind: sync with ${c.behind!.map(b => `${b.controller} fails (${b.reason}: ${b.error})`).join(', ')}`)
  const open = answered.filter(c => c.auth === 'off').map(c => c.controllerId)
  if (open.length > 0) parts.push(`auth OFF on ${open.join(', ')} (anyone may change the registry there)`)
  // Two controllers connect when each accepts the key the other keys new connections with (its primary).
  const unkeyed: string[] = []
  for (const a of answered) {
    for (const b of answered) {
      if (a !== b && a.meshKeyId != null && b.meshKeyIds != null && b.meshKeyIds.length > 0 && !b.meshKeyIds.includes(a.meshKeyId)) unkeyed.push(`${b.controllerId} does not accept ${a.controllerId}'s mesh key ${a.meshKeyId}`)
    }
  }
  if (unkeyed.length > 0) parts.push(`mesh keys do not match (such controllers never connect): ${unkeyed.join(', ')}`)
  else if (primaries.size > 1) parts.push(`mesh key rotation under way: ${[...primaries].map(k => `primary ${k} on ${answered.filter(c => c.meshKeyId === k).map(c => c.controllerId).join(' ')}`).join('; ')}`)
  const refusing = answered.filter(c => (c.refused?.length ?? 0) > 0)
  if (refusing.length > 0) parts.push(`peers refused (not in the allow list) by ${refusing.map(c => `${c.controllerId} (${c.refused!.length})`).join(', ')}`)
  return {
    controllers,
    ok: answered.length === controllers.length && hashes.size <= 1 && preserving.length === 0 && behind.length === 0 && unkeyed.length === 0,
    summary: parts.join('; ')
  }
}

async function ask (client: HttpsClient, url: string, timeoutMs: number): Promise<ControllerStatus> {
  try {
    const [health, mesh] = await Promise.all([
      client.json<HealthReply>('GET', new URL('/health', url).href, undefined, { timeoutMs }),
      client.json<MeshReply>('GET', new URL('/mesh', url).href, undefined, { timeoutMs })
    ])
    if (health.status !== 200 || mesh.status !== 200) return { url, error: `HTTP ${health.status !== 200 ? health.status : mesh.status}` }
    const h = health.body
    const m = mesh.body
    const owners = Object.entries(m.owners).filter(([id]) => id !== h.controller_id)
    return {
      url,
      error: null,
      controllerId: h.controller_id,
      status: h.status,
      workers: { total: h.workers.total, healthy: h.workers.healthy },
      ownWorkers: Object.values(h.own_workers).reduce((a, b) => a + b, 0),
      peers: { connected: m.connected_peers, known: owners.length },
      registryHash: m.registry_hash,
      agreeing: owners.filter(([, o]) => o.registry_hash_matches === true).map(([id]) => id).sort(),
      meshKeyId: m.mesh_key_id,
      // A controller of an older version lists no key ring: its one key is its primary.
      meshKeyIds: m.mesh_keys != null ? m.mesh_keys.filter(k => k.accepted !== false).map(k => k.id) : m.mesh_key_id != null ? [m.mesh_key_id] : [],
      refused: (m.refused ?? []).map(r => ({ peer: r.peer_id, address: r.address, count: r.count, reason: r.reason, lastAt: r.last_at })),
      auth: h.auth.mode,
      behind: h.sync.behind.map(b => ({ controller: b.controller_id ?? b.peer_id, reason: b.reason, error: b.last_error }))
    }
  } catch (err) {
    const e = err as Error & { code?: string, cause?: { code?: string } }
    return { url, error: e.cause?.code ?? e.code ?? e.message }
  }
}

/** The table `capmesh status` prints. */
export function formatStatus (s: MeshStatus): string {
  const rows = [['controller', 'url', 'state', 'workers healthy/total', 'own', 'links', 'registry', 'agrees with']]
  for (const c of s.controllers) {
    if (c.error != null) {
      rows.push(['?', c.url, `UNREACHABLE (${c.error})`, '', '', '', '', ''])
      continue
    }
    rows.push([
      c.controllerId!, c.url, c.status!, `${c.workers!.healthy}/${c.workers!.total}`, String(c.ownWorkers), `${c.peers!.connected}/${c.peers!.known}`,
      c.registryHash!, c.agreeing!.length > 0 ? c.agreeing!.join(' ') : '-'
    ])
  }
  const widths = rows[0].map((_h, i) => Math.max(...rows.map(r => r[i].length)))
  const lines = rows.map(r => r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd())
  const refused: string[] = []
  for (const c of s.controllers) {
    for (const r of c.refused ?? []) refused.push(`  ${c.controllerId} refused ${r.peer}${r.address != null ? ` at ${r.address}` : ''}: ${r.count}x, last ${r.lastAt} (${r.reason})`)
  }
  const tail = refused.length > 0 ? `\n\nrefused peers (they hold the mesh key but are not in the allow list):\n${refused.join('\n')}` : ''
  return `${lines.join('\n')}${tail}\n\n${s.ok ? 'OK' : 'NOT OK'}: ${s.summary}`
}
