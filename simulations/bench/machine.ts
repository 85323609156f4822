/**
 * How fast this machine is right now, in the unit that dominates a mesh's
 * per-message cost: Ed25519 signature checks a second (gossipsub checks one
 * per message; noise handshakes use the same curve family). Shared VMs here
 * have measured anywhere from ~5,800 to ~20,000 a second, so mesh figures
 * are only comparable alongside it.
 */
import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto'
import { performance } from 'node:perf_hooks'

export function ed25519VerifiesPerSecond (ms = 300): number {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const msg = randomBytes(300)
  const sig = sign(null, msg, privateKey)
  for (let i = 0; i < 50; i++) verify(null, msg, publicKey, sig)
  let n = 0
  const t0 = performance.now()
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 20; i++) verify(null, msg, publicKey, sig)
    n += 20
  }
  return Math.round(n / ((performance.now() - t0) / 1000))
}
