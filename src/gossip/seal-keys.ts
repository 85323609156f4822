/**
 * Seals (registry/seal.ts) signed with the controller's libp2p peer key: a
 * controller's signer id is its peer id, whose Ed25519 public key is inside
 * it, so a seal is checked with nothing but the peer id the admission list
 * names for its owner. Signing and verifying use node:crypto (OpenSSL): about
 * 3x faster than the JS implementation libp2p signs gossip with.
 */
import { createPublicKey, createPrivateKey, sign, verify, type KeyObject } from 'node:crypto'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'

/**
 * Who may sign which segment, and the signatures themselves. The registry
 * knows owners (controller ids); this maps them to signers (peer ids) and
 * keys. The controller's implementation uses its libp2p peer key and the
 * admission list (PeerSeals, below).
 */
export interface SealAuthority {
  /** This controller's signer id. */
  readonly self: string
  /** Signs `message` with this controller's key. */
  sign (message: Uint8Array): Uint8Array
  /** The signer admitted for `owner`, or undefined when `owner` is not an admitted controller. */
  signerOf (owner: string): string | undefined
  /** Whether `signature` over `message` verifies with `signer`'s public key (false for a malformed signer or signature). */
  verify (signer: string, message: Uint8Array, signature: Uint8Array): boolean
}

const b64url = (b: Uint8Array): string => Buffer.from(b).toString('base64url')

/** Public keys of signers seen, by peer id (null: not an Ed25519 peer id). Bounded by the admitted peers. */
const publicKeys = new Map<string, KeyObject | null>()

function publicKeyOf (peerId: string): KeyObject | null {
  let key = publicKeys.get(peerId)
  if (key !== undefined) return key
  try {
    const id = peerIdFromString(peerId)
    key = id.type === 'Ed25519' && id.publicKey != null
      ? createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(id.publicKey.raw) }, format: 'jwk' })
      : null
  } catch {
    key = null
  }
  if (publicKeys.size < 4096) publicKeys.set(peerId, key)
  return key
}

/**
 * A controller's seal authority, its key given once loaded (`use`): signs
 * with the peer key, and trusts for each owner the peer id `signerOf` names
 * (the admission list).
 */
export class PeerSeals implements SealAuthority {
  private key: KeyObject | null = null
  private id: string | null = null

  readonly signerOf: (owner: string) => string | undefined

  constructor (signerOf: (owner: string) => string | undefined) {
    this.signerOf = signerOf
  }

  /** Signs with `key` from now on (the controller's libp2p identity). */
  use (key: PrivateKey): void {
    if (key.type !== 'Ed25519') throw new TypeError('seals need an Ed25519 peer key')
    const raw = key.raw
    this.key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64url(raw.subarray(0, 32)), x: b64url(raw.subarray(32)) }, format: 'jwk' })
    this.id = peerIdFromPrivateKey(key).toString()
  }

  get self (): string {
    if (this.id == null) throw new Error('the peer key is not loaded yet')
    return this.id
  }

  sign (message: Uint8Array): Uint8Array {
    if (this.key == null) throw new Error('the peer key is not loaded yet')
    return sign(null, message, this.key)
  }

  verify (signer: string, message: Uint8Array, signature: Uint8Array): boolean {
    const key = publicKeyOf(signer)
    return key != null && signature.length === 64 && verify(null, message, key, signature)
  }
}
