import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyStream, MULTISTREAM_HEADER, trialDecrypt } from '../../../src/gossip/private-network.ts'

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

  it('gives the same stream in many small chunks (from the keystream made ahead) as in one', () => {
    const key = randomBytes(32)
    const nonce = randomBytes(24)
    const data = randomBytes(300_000)
    const whole = new KeyStream(key, nonce).xor(data)
    const ks = new KeyStream(key, nonce)
    const parts: Uint8Array[] = []
    // Small and large chunks mixed, so the stream moves in and out of what was made ahead.
    const sizes = [1, 2, 3, 17, 61, 200, 4095, 4096, 5000, 0, 64, 1]
    let at = 0
    for (let i = 0; at < data.length; i++) {
      const n = Math.min(sizes[i % sizes.length], data.length - at)
      parts.push(ks.xor(data.subarray(at, at + n)))
      at += n
    }
    expect(sha256(Buffer.concat(parts))).toBe(sha256(whole))
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

describe('trial decryption (a key ring)', () => {
  // What libp2p writes first on a connection, checked against @libp2p/multistream-select: the
  // dialer's select() and the listener's handle() both start with lp("/multistream/1.0.0\n").
  it('the known first bytes are the multistream-select header, length-prefixed', () => {
    expect(MULTISTREAM_HEADER).toHaveLength(20)
    expect(MULTISTREAM_HEADER[0]).toBe(0x13)
    expect(Buffer.from(MULTISTREAM_HEADER.subarray(1)).toString()).toBe('/multistream/1.0.0\n')
  })

  const sealed = (key: Uint8Array, nonce: Uint8Array, rest = new Uint8Array(0)): Uint8Array =>
    new KeyStream(key, nonce).xor(Uint8Array.from([...MULTISTREAM_HEADER, ...rest]))

  it('finds which of two keys the peer used, and its keystream continues after the header', () => {
    const [k1, k2] = [randomBytes(32), randomBytes(32)]
    const nonce = randomBytes(24)
    const rest = Uint8Array.from(Buffer.from('\x07/noise\n and more'))
    for (const used of [k1, k2]) {
      const wire = sealed(used, nonce, rest)
      const found = trialDecrypt([k1, k2], nonce, wire.subarray(0, 20))
      expect(Buffer.from(found!.key)).toEqual(Buffer.from(used))
      expect(Buffer.from(found!.stream.xor(wire.subarray(20))).toString()).toBe('\x07/noise\n and more')
    }
  })

  it('finds nothing for a wrong key, an unkeyed peer (plain header), or a wrong nonce', () => {
    const [k1, k2, other] = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const nonce = randomBytes(24)
    expect(trialDecrypt([k1, k2], nonce, sealed(other, nonce).subarray(0, 20))).toBeNull()
    expect(trialDecrypt([k1, k2], nonce, MULTISTREAM_HEADER)).toBeNull()
    expect(trialDecrypt([k1], randomBytes(24), sealed(k1, nonce).subarray(0, 20))).toBeNull()
  })

  it('takes exactly the header\'s 20 bytes (a truncated header is not tried)', () => {
    const k = randomBytes(32)
    const nonce = randomBytes(24)
    expect(() => trialDecrypt([k], nonce, sealed(k, nonce).subarray(0, 19))).toThrow(RangeError)
  })

  it('costs a few microseconds per accepted key per connection', () => {
    const keys = Array.from({ length: 8 }, () => randomBytes(32))
    const nonce = randomBytes(24)
    const head = sealed(keys[7], nonce).subarray(0, 20)
    for (let i = 0; i < 200; i++) trialDecrypt(keys, nonce, head)
    const n = 2000
    const t0 = performance.now()
    for (let i = 0; i < n; i++) trialDecrypt(keys, nonce, head)
    const perKeyUs = (performance.now() - t0) * 1000 / n / keys.length
    console.log(`trial decryption: ${perKeyUs.toFixed(2)} µs per key tried`)
    // Generous: a loaded CI machine; a noise handshake costs ~1 ms.
    expect(perKeyUs).toBeLessThan(200)
  })
})
