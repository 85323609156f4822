/**
 * The export's base64 in pieces (base64Pieces): whatever the edges of the
 * update's pieces, the text pieces concatenate to the one base64 string of
 * the joined bytes, and an export in pieces imports as the whole.
 */
import { describe, expect, it } from 'vitest'
import { base64Pieces, exportJson, exportState, importState, Registry, SealDirectory, updateOf } from '../../../src/registry/index.ts'

const whole = new Uint8Array(1000).map((_, i) => (i * 37 + 11) & 0xff)

/** `whole` cut at `cuts` (ends of the pieces), as views of it. */
const cutAt = (cuts: number[]): Uint8Array[] => [0, ...cuts].slice(0, -1).map((from, i) => whole.subarray(from, cuts[i]))

describe('base64Pieces', () => {
  it('concatenates to the base64 of the joined bytes, with padding only at the end, whatever the pieces', () => {
    const want = Buffer.from(whole).toString('base64')
    const cutsList = [
      [1000],
      [1, 2, 3, 1000],
      [1, 1, 999, 1000],
      [2, 4, 5, 7, 8, 500, 501, 1000],
      [100, 200, 400, 800, 1000],
      [3, 6, 9, 998, 999, 1000]
    ]
    for (const cuts of cutsList) {
      for (const pieceBytes of [3, 6, 300, 3 * 64 * 1024]) {
        const text = [...base64Pieces(cutAt(cuts), pieceBytes)]
        expect(text.join(''), `cuts ${cuts.join(',')}, pieces of ${pieceBytes}`).toBe(want)
        expect(text.slice(0, -1).every(t => !t.includes('=') && t.length > 0)).toBe(true)
      }
    }
    for (const n of [1, 2, 4, 5]) expect([...base64Pieces([whole.subarray(0, 1), whole.subarray(1, n)])].join('')).toBe(Buffer.from(whole.subarray(0, n)).toString('base64'))
    expect([...base64Pieces([])]).toEqual([])
  })

  it('refuses a piece size that is not a multiple of 3', () => {
    expect(() => [...base64Pieces([whole], 4)]).toThrow(RangeError)
  })

  it('a streamed JSON export and exportState carry the update Registry.encodeState encodes, and import whole', () => {
    const keys = new SealDirectory()
    const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    const cap = { name: 'echo', verb: 'invoke', version: '1', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 1 }
    for (let i = 0; i < 500; i++) a.register({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/${i}`, capabilities: [cap] })
    for (let i = 0; i < 500; i += 7) a.deregister(`w${i}`)
    const streamed = JSON.parse([...exportJson(a)].join('')) as { update: string }
    expect(Buffer.from(updateOf(streamed)).equals(Buffer.from(a.encodeState()))).toBe(true)
    expect(exportState(a).update).toBe(streamed.update)
    const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
    expect(importState(b, streamed)).toEqual({ added: a.size, workers: a.size })
  })
})
