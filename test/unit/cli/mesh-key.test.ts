/**
 * `capmesh mesh-key` on temp files, as an operator runs it: list, install
 * (new, --out, --from), use, remove; the primary cannot be removed; bad
 * input exits 2 naming the problem; the file stays a valid ring, mode 0600.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureMeshKey, meshKeyId, readMeshKeys } from '../../../src/gossip/mesh-key.ts'
import { capmesh } from '../../helpers/cli.ts'

let dir: string
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'capmesh-mesh-key-cli-')) })
afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

// Each case starts several `capmesh` processes one after another: each takes a second or more to
// load on a busy 2-core machine (30 s was reached with ~12 runnable processes), so the budget is per case, not per process.
describe('capmesh mesh-key', { timeout: 120_000 }, () => {
  it('rotates a key through install, use and remove on two hosts\' files', async () => {
    const a = join(dir, 'a', 'mesh.key')
    const b = join(dir, 'b.key')
    const old = meshKeyId(ensureMeshKey(a).key)
    // Host b holds the same key (copied).
    writeFileSync(b, readFileSync(a), { mode: 0o600 })

    const listed = await capmesh(['mesh-key', 'list', '--tls-dir', join(dir, 'a')])
    expect(listed.code).toBe(0)
    expect(listed.stdout.trim()).toBe(`${old}  primary`)

    const out = join(dir, 'new.key')
    const installed = await capmesh(['mesh-key', 'install', '--mesh-key', a, '--out', out])
    expect(installed.code, installed.stderr).toBe(0)
    const id = /installed key ([0-9a-f]{16})/.exec(installed.stdout)?.[1]
    expect(id).toBeDefined()
    expect(readMeshKeys(a).map(meshKeyId)).toEqual([old, id])
    expect(readMeshKeys(out).map(meshKeyId)).toEqual([id])
    expect(statSync(out).mode & 0o777).toBe(0o600)

    const fromFile = await capmesh(['mesh-key', 'install', '--mesh-key', b, '--from', out])
    expect(fromFile.code, fromFile.stderr).toBe(0)
    expect(readMeshKeys(b).map(meshKeyId)).toEqual([old, id])
    // Again: nothing changes.
    expect((await capmesh(['mesh-key', 'install', '--mesh-key', b, '--from', out])).stdout).toContain(`already holds key ${id}`)

    const refused = await capmesh(['mesh-key', 'remove', old, '--mesh-key', a])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('is the primary key')

    for (const f of [a, b]) {
      const used = await capmesh(['mesh-key', 'use', id!.slice(0, 8), '--mesh-key', f])
      expect(used.code, used.stderr).toBe(0)
      expect(readMeshKeys(f).map(meshKeyId)).toEqual([id, old])
      const removed = await capmesh(['mesh-key', 'remove', old, '--mesh-key', f])
      expect(removed.code, removed.stderr).toBe(0)
      expect(readMeshKeys(f).map(meshKeyId)).toEqual([id])
      expect(statSync(f).mode & 0o777).toBe(0o600)
    }
    expect((await capmesh(['mesh-key', 'list', '--mesh-key', b])).stdout.trim()).toBe(`${id}  primary`)
  })

  it('exits 2 naming the problem: an unknown id, a malformed id, a file that is not a key', async () => {
    const f = join(dir, 'c.key')
    ensureMeshKey(f)
    const unknown = await capmesh(['mesh-key', 'use', 'abcdef', '--mesh-key', f])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('holds no key abcdef')
    const malformed = await capmesh(['mesh-key', 'remove', 'zz', '--mesh-key', f])
    expect(malformed.code).toBe(2)
    expect(malformed.stderr).toContain('is not a mesh key id')
    const notKey = await capmesh(['mesh-key', 'install', '--mesh-key', f, '--from', join(dir, 'missing.key')])
    expect(notKey.code).toBe(2)
    expect(notKey.stderr).toContain('cannot be read')
  })
})
