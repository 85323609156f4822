import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyStream } from '../../../src/gossip/private-network.ts'

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

describe('the mesh key stream (XSalsa20)', () => {
  it('matches NaCl\'s XSalsa20 test vector (tests/stream.c: 4 MiB of keystream, SHA-256), fed in uneven chunks', () => {
    const key = Buffer.from('1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389', 'hex')
    const nonce = Buffer.from('69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37', 'hex')
    const ks = new KeyStream(key, nonce)
    const total = 4_194_304
    const out = new Uint8Array(total)
    // Chunks that start and end inside blocks, span several, or are empty: how TCP hands data over.
    const sizes = [1, 63, 64, 65, 0, 127, 1000, 4096, 7, 65_536, 100_003]
    let at = 0
    for (let i = 0; at < total; i++) {
      const n = Math.min(sizes[i % sizes.length], total - at)
      out.set(ks.xor(new Uint8Array(n)), at)
      at += n
    }
    expect(sha256(out)).toBe('662b9d0e3463029156069b12f918691a98f7dfb2ca0393c96bbfc6b1fbd630a2')
  })

  it('takes a chunk larger than the 64 MB that broke the WebAssembly implementation, and undoes itself', () => {
    const key = randomBytes(32)
    const nonce = randomBytes(24)
    const data = new Uint8Array(70 * 1024 * 1024)
    data[0] = 1
    data[data.length - 1] = 2
    const sealed = new KeyStream(key, nonce).xor(data)
    expect(sealed).toHaveLength(data.length)
    expect(sealed.subarray(0, 4096)).not.toEqual(data.subarray(0, 4096))
    const opened = new KeyStream(key, nonce).xor(sealed)
    expect(sha256(opened)).toBe(sha256(data))
  })

  it('each side\'s nonce gives its own stream; keys and nonces of the wrong size are refused', () => {
    const key = randomBytes(32)
    const zeros = new Uint8Array(256)
    expect(new KeyStream(key, randomBytes(24)).xor(zeros)).not.toEqual(new KeyStream(key, randomBytes(24)).xor(zeros))
    expect(() => new KeyStream(randomBytes(31), randomBytes(24))).toThrow(RangeError)
    expect(() => new KeyStream(key, randomBytes(16))).toThrow(RangeError)
  })
})
