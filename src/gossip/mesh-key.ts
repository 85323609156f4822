/**
 * The mesh key: a 256-bit secret every controller of one mesh shares
 * (libp2p private network, see private-network.ts). Every p2p connection is
 * encrypted with it (XSalsa20) underneath noise, so a node without the key
 * cannot complete a handshake, let alone publish or sync: noise alone
 * authenticates *a* peer, the key makes it one of ours.
 *
 * The file is the swarm key format of go-ipfs and js-libp2p:
 *
 *   /key/swarm/psk/1.0.0/
 *   /base16/
 *   <64 hex digits>
 *
 * By default it lives in the TLS dir, next to the CA that workers already
 * share, and is created there when missing.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError } from '../errors.ts'
import { KEY_BYTES } from './private-network.ts'

const HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n'
const FORMAT = /^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n([0-9a-fA-F]{64})\s*$/

/** Reads and checks a mesh key file; returns the 32-byte key. */
export function readMeshKey (file: string): Uint8Array {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`mesh key ${file} cannot be read: ${(err as Error).message}`)
  }
  const m = FORMAT.exec(text)
  if (m == null) {
    throw new ConfigError(`mesh key ${file} is not a libp2p swarm key (expected the lines "/key/swarm/psk/1.0.0/", "/base16/" and 64 hex digits; \`capmesh certs init\` writes one)`)
  }
  return Uint8Array.from(Buffer.from(m[1], 'hex'))
}

/**
 * Returns the mesh key in `file`, creating a new random one if there is
 * none. Safe when several controllers start on one TLS dir at once: the key
 * is written to a private temp file and hard-linked into place, which fails
 * if another process got there first (then its key is used).
 */
export function ensureMeshKey (file: string): { key: Uint8Array, created: boolean } {
  if (existsSync(file)) return { key: readMeshKey(file), created: false }
  mkdirSync(dirname(file), { recursive: true })
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`
  writeFileSync(tmp, HEADER + randomBytes(KEY_BYTES).toString('hex'), { mode: 0o600 })
  let created = true
  try {
    linkSync(tmp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ConfigError(`mesh key ${file} cannot be created: ${(err as Error).message}`)
    created = false
  } finally {
    rmSync(tmp, { force: true })
  }
  return { key: readMeshKey(file), created }
}

/**
 * A short public name for a mesh key (16 hex digits of a domain-separated
 * SHA-256): `/mesh` and `/health` show it, so two controllers that never
 * connect can be checked for holding the same key without showing the key.
 */
export function meshKeyId (key: Uint8Array): string {
  return createHash('sha256').update('capmesh mesh key id\0').update(key).digest('hex').slice(0, 16)
}
