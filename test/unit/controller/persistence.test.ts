import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Persistence } from '../../../src/controller/persistence.ts'
import { Origin, Registry, SealDirectory, type Capability } from '../../../src/registry/index.ts'

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
