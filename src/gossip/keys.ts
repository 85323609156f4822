/**
 * The controller's libp2p identity: an Ed25519 key kept in the data dir, so
 * its peer id survives restarts (peers and configs can name it).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { StoreError } from '../errors.ts'

export async function loadOrCreatePeerKey (file: string): Promise<PrivateKey> {
  if (existsSync(file)) {
    try {
      return privateKeyFromProtobuf(readFileSync(file))
    } catch (err) {
      throw new StoreError(`peer key ${file} is unreadable; remove it to create a new identity: ${(err as Error).message}`, { cause: err })
    }
  }
  const key = await generateKeyPair('Ed25519')
  mkdirSync(dirname(file), { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  renameSync(tmp, file)
  return key
}

/** The peer id of the key in `file`, created if missing (`capmesh peer-key`: before a controller's first start). */
export async function ensurePeerKey (file: string): Promise<{ peerId: string, created: boolean }> {
  const created = !existsSync(file)
  return { peerId: peerIdFromPrivateKey(await loadOrCreatePeerKey(file)).toString(), created }
}
