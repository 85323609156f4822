import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { Persistence, snapshotMacKey } from '../../../src/controller/persistence.ts'
import { FileStore, Origin, Registry, SealDirectory, type Capability } from '../../../src/registry/index.ts'

const keys = new SealDirectory()
const cap: Capability = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: {}, requires_gpu: false, max_concurrency: 4 }
const log = pino({ level: 'silent' })
const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })

describe('Persistence and a sliced apply', () => {
  it('a controller stopped in the middle of a large import comes back with all of it, not the part applied', async () => {
    const a = new Registry({ controllerId: 'a', seals: keys.authority('a') })
    for (let i = 0; i < 300; i++) a.register({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [cap] })
    const dir = mkdtempSync(join(tmpdir(), 'persistence-'))
    dirs.push(dir)
    const b = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const store = new Persistence({ dir, fsync: false, registry: b, log })
    store.load()
    // One struct a slice: many turns of the event loop, and a stop in the middle of them.
    const importing = b.applyInSlices(a.encodeState(), Origin.import, { sliceStructs: 1, minBytes: 0 })
    while (b.size === 0) await new Promise(resolve => setImmediate(resolve))
    expect(b.applyingSlices).toBe(true)
    expect(b.size).toBeLessThan(300)
    store.close()
    await importing

    const again = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const reopened = new Persistence({ dir, fsync: false, registry: again, log })
    expect(reopened.load()).toBe(300)
    reopened.close()
  })
})

describe('Persistence and its own snapshot', () => {
  const macKey = snapshotMacKey(new Uint8Array(64).fill(3))
  const tempDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'persistence-'))
    dirs.push(dir)
    return dir
  }

  it('a controller restarted from the snapshot it wrote holds the same registry, and checks what comes next against it', () => {
    const c = new Registry({ controllerId: 'c', seals: keys.authority('c') })
    for (let i = 0; i < 50; i++) c.register({ worker_id: `c${i}`, worker_url: `https://127.0.0.1:7000/c${i}`, capabilities: [cap] })
    const dir = tempDir()
    const b = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const store = new Persistence({ dir, fsync: false, registry: b, log, macKey })
    store.load()
    for (let i = 0; i < 200; i++) b.register({ worker_id: `b${i}`, worker_url: `https://127.0.0.1:7000/b${i}`, capabilities: [cap] })
    b.applyUpdate(c.encodeState(), Origin.remote)
    store.close()

    const again = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const refused: string[] = []
    again.on('refused', (_o, _u, reason) => { refused.push(reason) })
    const reopened = new Persistence({ dir, fsync: false, registry: again, log, macKey })
    expect(reopened.load()).toBe(250)
    expect([...again.workers()].sort((x, y) => x.worker_id < y.worker_id ? -1 : 1)).toEqual([...b.workers()].sort((x, y) => x.worker_id < y.worker_id ? -1 : 1))
    // The digests were rebuilt from the unchecked replay: c's next write verifies against them, a forgery does not.
    const sv = again.encodeStateVector()
    c.register({ worker_id: 'c50', worker_url: 'https://127.0.0.1:7000/c50', capabilities: [cap] })
    expect(again.applyUpdate(c.encodeDiff(sv), Origin.remote)).toBe(true)
    expect(again.get('c50')?.owner).toBe('c')
    const forger = new Registry({ controllerId: 'c', seals: new SealDirectory().authority('c') })
    forger.register({ worker_id: 'evil', worker_url: 'https://127.0.0.1:7000/evil', capabilities: [cap] })
    expect(() => again.applyUpdate(forger.encodeState(), Origin.remote)).toThrow()
    expect(again.get('evil')).toBeUndefined()
    expect(refused).toHaveLength(1)
    reopened.close()
  })

  it('a snapshot it did not write is checked: a segment without its owner\'s seal is refused', () => {
    const dir = tempDir()
    const forger = new Registry({ controllerId: 'c', seals: new SealDirectory().authority('c') })
    forger.register({ worker_id: 'evil', worker_url: 'https://127.0.0.1:7000/evil', capabilities: [cap] })
    // Written without the MAC (another process, a copied or edited file).
    const plain = new FileStore({ dir: join(dir, 'registry') })
    plain.load()
    plain.snapshot(forger.encodeState())
    plain.close()
    const b = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const refused: boolean[] = []
    b.on('refused', (origin, unsigned) => { if (origin === Origin.load) refused.push(unsigned) })
    const store = new Persistence({ dir, fsync: false, registry: b, log, macKey })
    expect(store.load()).toBe(0)
    expect(refused).toEqual([true])
    store.close()
  })

  it('segments of its own snapshot sealed by a key the allow list no longer admits are dropped at load', () => {
    const dir = tempDir()
    const b = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    b.register({ worker_id: 'b0', worker_url: 'https://127.0.0.1:7000/b0', capabilities: [cap] })
    // d was admitted when this snapshot was written; its key is not the one admitted for d now.
    const d = new Registry({ controllerId: 'd', seals: new SealDirectory().authority('d') })
    d.register({ worker_id: 'd0', worker_url: 'https://127.0.0.1:7000/d0', capabilities: [cap] })
    const own = new FileStore({ dir: join(dir, 'registry'), macKey })
    own.load()
    own.snapshot(Y.mergeUpdates([b.encodeState(), d.encodeState()]))
    own.close()
    const again = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const store = new Persistence({ dir, fsync: false, registry: again, log, macKey })
    expect(store.load()).toBe(1)
    expect(again.get('b0')).toBeDefined()
    expect(again.get('d0')).toBeUndefined()
    store.close()
    // The drop was logged: a start from what it left holds b0 alone.
    const third = new Registry({ controllerId: 'b', seals: keys.authority('b') })
    const last = new Persistence({ dir, fsync: false, registry: third, log, macKey })
    expect(last.load()).toBe(1)
    expect(third.stats().segments).toBe(1)
    last.close()
  })
})
