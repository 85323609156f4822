/**
 * `capmesh status`'s verdict on mesh keys and refused peers, from canned
 * /health and /mesh replies: primaries that differ but are all accepted
 * (a rotation under way) are fine; a primary some controller does not
 * accept is not (those two never connect); refused peers are listed and do
 * not change the verdict.
 */
import { describe, expect, it } from 'vitest'
import { formatStatus, meshStatus } from '../../../src/cli/status.ts'
import type { HttpsClient } from '../../../src/utils/https-client.ts'

interface Fake { id: string, primary: string, accepted: string[], refused?: Array<Record<string, unknown>> }

function client (controllers: Record<string, Fake>): HttpsClient {
  const json = async (_method: string, url: string) => {
    const u = new URL(url)
    const c = controllers[u.origin]
    const body = u.pathname === '/health'
      ? { status: 'ok', controller_id: c.id, workers: { total: 1, healthy: 1 }, own_workers: { healthy: 1 }, sync: { behind: [] }, auth: { mode: 'required' }, mesh: { mesh_key_id: c.primary, mesh_key_ids: c.accepted } }
      : { connected_peers: 2, owners: {}, registry_hash: 'h', mesh_key_id: c.primary, mesh_keys: c.accepted.map((id, i) => ({ id, primary: i === 0, accepted: true, connections: 1 })), admission: { file: null, controllers: [] }, refused: c.refused ?? [] }
    return { status: 200, headers: {}, body }
  }
  return { json } as unknown as HttpsClient
}

const urls = ['https://a:1', 'https://b:1', 'https://c:1']

describe('capmesh status: mesh keys and refused peers', () => {
  it('a rotation under way (different primaries, each accepted by all) is OK, and says so', async () => {
    const s = await meshStatus(client({
      'https://a:1': { id: 'a', primary: 'k2', accepted: ['k2', 'k1'] },
      'https://b:1': { id: 'b', primary: 'k1', accepted: ['k1', 'k2'] },
      'https://c:1': { id: 'c', primary: 'k2', accepted: ['k2', 'k1'] }
    }), urls)
    expect(s.ok).toBe(true)
    expect(s.summary).toContain('mesh key rotation under way: primary k2 on a c; primary k1 on b')
  })

  it('a primary another controller does not accept is NOT OK, naming who does not accept whose key', async () => {
    const s = await meshStatus(client({
      'https://a:1': { id: 'a', primary: 'k2', accepted: ['k2', 'k1'] },
      'https://b:1': { id: 'b', primary: 'k1', accepted: ['k1'] },
      'https://c:1': { id: 'c', primary: 'k1', accepted: ['k1', 'k2'] }
    }), urls)
    expect(s.ok).toBe(false)
    expect(s.summary).toContain('b does not accept a\'s mesh key k2')
    expect(s.summary).not.toContain('c does not accept')
  })

  it('lists refused peers under the table without changing the verdict', async () => {
    const s = await meshStatus(client({
      'https://a:1': { id: 'a', primary: 'k1', accepted: ['k1'], refused: [{ peer_id: '12D3KooWevil', address: '/ip4/10.0.0.9/tcp/4001', count: 3, last_at: '2026-01-01T00:00:00.000Z', reason: 'inbound' }] },
      'https://b:1': { id: 'b', primary: 'k1', accepted: ['k1'] },
      'https://c:1': { id: 'c', primary: 'k1', accepted: ['k1'] }
    }), urls)
    expect(s.ok).toBe(true)
    expect(s.summary).toContain('peers refused (not in the allow list) by a (1)')
    expect(formatStatus(s)).toContain('a refused 12D3KooWevil at /ip4/10.0.0.9/tcp/4001: 3x, last 2026-01-01T00:00:00.000Z (inbound)')
  })
})
