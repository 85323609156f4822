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
 * A file may hold several such blocks, one after the other (blank lines
 * between them allowed): the **key ring**, as Serf's keyring. A controller
 * accepts a connection keyed with any of them and keys what it sends with
 * the first, the **primary**. A file with one block is a one-key ring, and
 * is exactly what other swarm-key readers expect. Rotation without downtime
 * is: install the new key everywhere (second place), make it primary
 * everywhere, remove the old one (`capmesh mesh-key`, docs/operations.md).
 *
 * By default it lives in the TLS dir, next to the CA that workers already
 * share, and is created there when missing.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { MAX_MESH_KEYS } from '../constants.ts'
import { ConfigError } from '../errors.ts'
import { withDirLock, writeFileAtomic } from '../utils/files.ts'

/** A mesh key's length: 256 bits (XSalsa20's key). */
export const KEY_BYTES = 32
const HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n'
const FORMAT_HINT = 'expected blocks of the lines "/key/swarm/psk/1.0.0/", "/base16/" and 64 hex digits, the first block being the primary key; `capmesh certs init` writes one'

/** Parses the text of a mesh key file: one key or several (the first is the primary). */
export function parseMeshKeys (text: string, file: string): Uint8Array[] {
  const lines = text.split(/\r?\n/).map(l => l.trim())
  const keys: Uint8Array[] = []
  const seen = new Map<string, number>()
  let i = 0
  while (i < lines.length) {
    if (lines[i] === '') {
      i++
      continue
    }
    const n = i + 1
    if (lines[i] !== '/key/swarm/psk/1.0.0/' || lines[i + 1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[i + 2] ?? '')) {
      throw new ConfigError(`mesh key ${file}:${n} is not a libp2p swarm key (${FORMAT_HINT})`)
    }
    const hex = lines[i + 2].toLowerCase()
    const before = seen.get(hex)
    if (before != null) throw new ConfigError(`mesh key ${file}:${n}: key ${keys.length + 1} is the same as key ${before}`)
    seen.set(hex, keys.length + 1)
    keys.push(Uint8Array.from(Buffer.from(hex, 'hex')))
    i += 3
  }
  if (keys.length === 0) throw new ConfigError(`mesh key ${file} holds no key (${FORMAT_HINT})`)
  if (keys.length > MAX_MESH_KEYS) throw new ConfigError(`mesh key ${file} holds ${keys.length} keys; at most ${MAX_MESH_KEYS} (remove the ones no controller uses any more)`)
  return keys
}

/** The text of a mesh key file holding `keys`, the primary first. */
export function formatMeshKeys (keys: Uint8Array[]): string {
  return keys.map(k => HEADER + Buffer.from(k).toString('hex') + '\n').join('')
}

/** Reads and checks a mesh key file: every key it holds, the primary first. */
export function readMeshKeys (file: string): Uint8Array[] {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`mesh key ${file} cannot be read: ${(err as Error).message}`)
  }
  return parseMeshKeys(text, file)
}

/** Reads and checks a mesh key file; returns its primary key (32 bytes). */
export function readMeshKey (file: string): Uint8Array {
  return readMeshKeys(file)[0]
}

/**
 * Returns the mesh keys in `file`, creating a new random one if there is
 * none. Safe when several controllers start on one TLS dir at once: the key
 * is written to a private temp file and hard-linked into place, which fails
 * if another process got there first (then its key is used).
 */
export function ensureMeshKey (file: string): { key: Uint8Array, keys: Uint8Array[], created: boolean } {
  let created = false
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true })
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`
    writeFileSync(tmp, HEADER + randomBytes(KEY_BYTES).toString('hex'), { mode: 0o600 })
    created = true
    try {
      linkSync(tmp, file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ConfigError(`mesh key ${file} cannot be created: ${(err as Error).message}`)
      created = false
    } finally {
      rmSync(tmp, { force: true })
    }
  }
  const keys = readMeshKeys(file)
  return { key: keys[0], keys, created }
}

/**
 * A short public name for a mesh key (16 hex digits of a domain-separated
 * SHA-256): `/mesh` and `/health` show it, so two controllers that never
 * connect can be checked for holding the same key without showing the key.
 */
export function meshKeyId (key: Uint8Array): string {
  return createHash('sha256').update('capmesh mesh key id\0').update(key).digest('hex').slice(0, 16)
}

/** A new random mesh key. */
export function newMeshKey (): Uint8Array {
  return Uint8Array.from(randomBytes(KEY_BYTES))
}

/** The key of `keys` whose id is `id`, or starts with `id` (at least 4 hex digits, one match). */
function find (keys: Uint8Array[], id: string, file: string): number {
  const want = id.toLowerCase()
  if (!/^[0-9a-f]{4,16}$/.test(want)) throw new ConfigError(`"${id}" is not a mesh key id (4 to 16 hex digits, as \`capmesh mesh-key list\` shows)`)
  const hits = keys.map((k, i) => [meshKeyId(k), i] as const).filter(([kid]) => kid.startsWith(want))
  if (hits.length === 0) throw new ConfigError(`mesh key ${file} holds no key ${id} (it holds ${keys.map(meshKeyId).join(', ')})`)
  if (hits.length > 1) throw new ConfigError(`"${id}" names several keys of ${file}: ${hits.map(h => h[0]).join(', ')}; give more digits`)
  return hits[0][1]
}

/** What a key ring change did: the ring after it, and the id of the key it was about. */
export interface KeyRingChange {
  keys: Uint8Array[]
  id: string
  /** False when the ring already was that way (installing a key it holds, using the primary). */
  changed: boolean
}

/**
 * Changes the key ring in `file` under the lock of its folder and writes it
 * back in one rename (mode 0600): a controller polling the file reads the
 * old ring or the new one, never part of either.
 */
async function updateRing (file: string, change: (keys: Uint8Array[]) => { keys: Uint8Array[], id: string }): Promise<KeyRingChange> {
  return await withDirLock(dirname(file), () => {
    const before = readMeshKeys(file)
    const { keys, id } = change(before)
    const changed = formatMeshKeys(keys) !== formatMeshKeys(before)
    if (changed) writeFileAtomic(file, formatMeshKeys(keys), 0o600)
    return { keys, id, changed }
  })
}

/** Adds `key` (default: a new random one) to the ring in `file` as its last, non-primary key. */
export async function installMeshKey (file: string, key: Uint8Array = newMeshKey()): Promise<KeyRingChange> {
  if (key.length !== KEY_BYTES) throw new ConfigError(`a mesh key is ${KEY_BYTES} bytes`)
  return await updateRing(file, keys => {
    const id = meshKeyId(key)
    if (keys.some(k => meshKeyId(k) === id)) return { keys, id }
    if (keys.length >= MAX_MESH_KEYS) throw new ConfigError(`mesh key ${file} already holds ${keys.length} keys, the most it may; remove one first`)
    return { keys: [...keys, key], id }
  })
}

/** Makes the key `id` (or a unique prefix of it) the primary of the ring in `file`. */
export async function useMeshKey (file: string, id: string): Promise<KeyRingChange> {
  return await updateRing(file, keys => {
    const i = find(keys, id, file)
    return { keys: [keys[i], ...keys.filter((_, j) => j !== i)], id: meshKeyId(keys[i]) }
  })
}

/** Removes the key `id` (or a unique prefix of it) from the ring in `file`; the primary cannot be removed. */
export async function removeMeshKey (file: string, id: string): Promise<KeyRingChange> {
  return await updateRing(file, keys => {
    const i = find(keys, id, file)
    if (i === 0) throw new ConfigError(`${meshKeyId(keys[0])} is the primary key of ${file}: make another key primary first (\`capmesh mesh-key use <id>\`)`)
    return { keys: keys.filter((_, j) => j !== i), id: meshKeyId(keys[i]) }
  })
}
