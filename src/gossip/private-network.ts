/**
 * The mesh key at work: libp2p's private-network protocol (pnet v1, the one
 * go-libp2p and @libp2p/pnet speak). Each side sends a random 24-byte nonce;
 * from then on everything it sends is XORed with the XSalsa20 keystream of
 * (mesh key, its own nonce), below noise. A node without the key garbles its
 * side of the noise handshake, which then fails: it never gets a connection.
 *
 * Why not @libp2p/pnet itself: its XSalsa20 (the `xsalsa20` package) works
 * in one WebAssembly memory of at most 64 MB shared by every connection of
 * the process, and a large enough read made it throw inside a socket event
 * handler, which killed the controller (bench:mesh-processes, heal run 2).
 * Here the cipher is @noble/ciphers' (audited, plain JS, no shared state),
 * and any failure aborts that one connection.
 *
 * Several keys (a key ring, for rotation without downtime): a connection's
 * sender keys what it sends with the primary key; the receiver finds which
 * key the other side used by trial decryption of the first 20 bytes it
 * receives after the nonce, which are always libp2p's multistream-select
 * header (varint 19, then `/multistream/1.0.0\n`: the dialer's first write,
 * and the listener's first answer; @libp2p/multistream-select's select.ts
 * and handle.ts). The key that turns them into that header is the one; none
 * does: the connection is aborted as a node without the key's would be. The
 * two directions of one connection may use different keys (each side's
 * primary) while a rotation is under way. A trial costs one XSalsa20 block
 * per accepted key, once per connection.
 */
import type { AbortOptions, Logger, MessageStream, MultiaddrConnection } from '@libp2p/interface'
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils'
import { xsalsa20 } from '@noble/ciphers/salsa.js'
import { KEY_BYTES } from './mesh-key.ts'

export { KEY_BYTES }

export const NONCE_BYTES = 24
const BLOCK = 64
const ZERO_BLOCK = new Uint8Array(BLOCK)
/**
 * Keystream made ahead for chunks smaller than this: one cipher call per
 * AHEAD bytes rather than one per chunk. Gossip writes many small frames,
 * and each call's set-up (typed-array views of key, nonce and data) cost
 * more than its XOR: ~10 % of the CPU of a 32-controller heal, in a profile.
 */
const AHEAD = 4096
const ZEROS = new Uint8Array(AHEAD)
/**
 * What each side sends first on a new connection once the nonces are exchanged: the
 * multistream-select header, length-prefixed (varint 19, `/multistream/1.0.0\n`).
 */
export const MULTISTREAM_HEADER = Uint8Array.from([0x13, ...new TextEncoder().encode('/multistream/1.0.0\n')])
/** noble takes a 32-bit block counter: 2^32 blocks of 64 bytes (256 GiB) per direction, then the connection is closed (and re-dialled). */
const MAX_BLOCKS = 2 ** 32 - 1

/** The XSalsa20 keystream of (key, nonce) as a stream: chunks of any size, in order. */
export class KeyStream {
  private readonly key: Uint8Array
  private readonly nonce: Uint8Array
  /** Bytes of keystream used so far. */
  private offset = 0
  /** Keystream from stream position `aheadStart` (a block boundary) to `aheadEnd`, for small chunks. */
  private readonly ahead = new Uint8Array(AHEAD)
  private aheadStart = 0
  private aheadEnd = 0

  constructor (key: Uint8Array, nonce: Uint8Array) {
    if (key.length !== KEY_BYTES) throw new RangeError(`the key must be ${KEY_BYTES} bytes`)
    if (nonce.length !== NONCE_BYTES) throw new RangeError(`the nonce must be ${NONCE_BYTES} bytes`)
    this.key = key
    this.nonce = nonce
  }

  /**
   * `data` XOR the next `data.length` bytes of keystream (a new Buffer). From Node's pool when
   * small, not a typed array of its own: each of those was a backing store to allocate and zero,
   * and the socket turned it into a Buffer again (allocating and writing a 1,400-byte chunk:
   * 1.8–2.1 µs against 0.5 µs, in a throwaway loop).
   */
  xor (data: Uint8Array): Uint8Array {
    const out = Buffer.allocUnsafe(data.length)
    if (data.length === 0) return out
    if ((this.offset + data.length) / BLOCK >= MAX_BLOCKS) throw new RangeError('keystream exhausted on this connection')
    if (data.length < AHEAD && (this.offset + AHEAD) / BLOCK < MAX_BLOCKS) {
      let done = 0
      while (done < data.length) {
        if (this.offset >= this.aheadEnd) {
          this.aheadStart = this.offset - (this.offset % BLOCK)
          xsalsa20(this.key, this.nonce, ZEROS, this.ahead, this.aheadStart / BLOCK)
          this.aheadEnd = this.aheadStart + AHEAD
        }
        const n = Math.min(data.length - done, this.aheadEnd - this.offset)
        const ks = this.ahead
        const from = this.offset - this.aheadStart
        for (let i = 0; i < n; i++) out[done + i] = data[done + i] ^ ks[from + i]
        done += n
        this.offset += n
      }
      return out
    }
    let done = 0
    const into = this.offset % BLOCK
    if (into !== 0) {
      // Finish the block the previous chunk stopped in.
      const block = xsalsa20(this.key, this.nonce, ZERO_BLOCK, undefined, Math.floor(this.offset / BLOCK))
      done = Math.min(BLOCK - into, data.length)
      for (let i = 0; i < done; i++) out[i] = data[i] ^ block[into + i]
    }
    if (done < data.length) {
      xsalsa20(this.key, this.nonce, data.subarray(done), out.subarray(done), (this.offset + done) / BLOCK)
    }
    this.offset += data.length
    return out
  }
}

/** The connection was keyed with none of the accepted mesh keys. */
export class MeshKeyMismatchError extends Error {
  constructor (message = 'the peer keyed the connection with none of the accepted mesh keys') {
    super(message)
    this.name = 'MeshKeyMismatchError'
  }
}

/**
 * The key that turns `head` (the first MULTISTREAM_HEADER.length bytes received after the
 * nonce) into the multistream header, and its keystream positioned after them; null if none.
 */
export function trialDecrypt (keys: Uint8Array[], nonce: Uint8Array, head: Uint8Array): { key: Uint8Array, stream: KeyStream } | null {
  if (head.length !== MULTISTREAM_HEADER.length) throw new RangeError(`trial decryption takes the first ${MULTISTREAM_HEADER.length} bytes`)
  for (const key of keys) {
    const stream = new KeyStream(key, nonce)
    const plain = stream.xor(head)
    let same = true
    for (let i = 0; i < plain.length; i++) if (plain[i] !== MULTISTREAM_HEADER[i]) same = false
    if (same) return { key, stream }
  }
  return null
}

export interface PrivateNetworkInit {
  /** The accepted mesh keys (32 bytes each), the primary first: what this side sends is keyed with it. */
  keys: Uint8Array[]
  /** The nonce exchange must finish within this (ms). @default 5000 */
  timeoutMs?: number
  /** A connection was keyed with none of the accepted keys (it is aborted). Must not block. */
  onMismatch?: (remoteAddr: string) => void
}

/** A connection as the key ring sees it: the key of each direction (`in` is null until the first bytes arrive) and the peer, once noise named it. */
export interface KeyedLink {
  in: Uint8Array | null
  out: Uint8Array
  peerId: string | null
  remoteAddr: string
  /** Ends the connection at once. */
  abort: (err: Error) => void
}

/**
 * The mesh key ring at work for one libp2p node: the `connectionProtector`
 * (`protector()`), the keys accepted now (`setKeys` changes them for
 * connections made from then on), and the connections it keyed, so that
 * those keyed with a key that was removed can be found and closed.
 */
export class PrivateNetwork {
  private ring: Uint8Array[]
  private readonly timeoutMs: number
  private readonly onMismatch: (remoteAddr: string) => void
  private readonly live = new Set<KeyedConnection>()
  private readonly byTransport = new WeakMap<object, KeyedConnection>()

  constructor (init: PrivateNetworkInit) {
    this.ring = checkKeys(init.keys)
    this.timeoutMs = init.timeoutMs ?? 5000
    this.onMismatch = init.onMismatch ?? (() => {})
  }

  /** The accepted keys, the primary first. */
  get keys (): Uint8Array[] { return [...this.ring] }

  /** Accepts `keys` (primary first) from now on. Open connections keep their keys (see `stale`). */
  setKeys (keys: Uint8Array[]): void {
    this.ring = checkKeys(keys)
  }

  /** Open connections, with the keys each direction uses. */
  links (): KeyedLink[] {
    return [...this.live].map(c => c.link())
  }

  /** Open connections that use (either way) a key that is no longer accepted. */
  stale (): KeyedLink[] {
    const accepted = new Set(this.ring.map(k => Buffer.from(k).toString('hex')))
    const ok = (k: Uint8Array | null): boolean => k == null || accepted.has(Buffer.from(k).toString('hex'))
    return this.links().filter(l => !ok(l.in) || !ok(l.out))
  }

  /**
   * Tells the ring which peer a transport connection turned out to be (the
   * connection gater learns it once noise has run): so that `stale` can say
   * which peers to hang up on.
   */
  identify (transport: object, peerId: string): void {
    const c = this.byTransport.get(transport)
    if (c != null) c.peerId = peerId
  }

  /** A libp2p `connectionProtector` factory. */
  protector (): () => { protect: (connection: MessageStream, options?: AbortOptions) => Promise<MessageStream> } {
    return () => ({
      protect: async (connection, options) => {
        const log = connection.log.newScope('mesh-key')
        const localNonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES))
        const opts = options?.signal != null ? options : { signal: AbortSignal.timeout(this.timeoutMs) }
        const bytes = byteStream(connection)
        const [remote] = await Promise.all([bytes.read({ bytes: NONCE_BYTES, ...opts }), bytes.write(localNonce, opts)])
        const maConn = bytes.unwrap() as MultiaddrConnection
        const primary = this.ring[0]
        const keyed = new KeyedConnection({
          maConn,
          remoteNonce: remote.subarray(),
          accepted: () => this.ring,
          outKey: primary,
          outbound: new KeyStream(primary, localNonce),
          onMismatch: addr => { this.onMismatch(addr) },
          log
        })
        this.live.add(keyed)
        this.byTransport.set(maConn, keyed)
        maConn.addEventListener('close', () => { this.live.delete(keyed) })
        if (maConn.status !== 'open') this.live.delete(keyed)
        return keyed
      }
    })
  }
}

function checkKeys (keys: Uint8Array[]): Uint8Array[] {
  if (keys.length === 0) throw new RangeError('at least one mesh key is needed')
  for (const k of keys) if (k.length !== KEY_BYTES) throw new RangeError(`the mesh key must be ${KEY_BYTES} bytes`)
  return keys.map(k => Uint8Array.from(k))
}

/** A libp2p `connectionProtector` factory for one mesh key, or a ring of them (the primary first). */
export function privateNetwork (init: { key: Uint8Array, timeoutMs?: number } | PrivateNetworkInit): () => { protect: (connection: MessageStream, options?: AbortOptions) => Promise<MessageStream> } {
  return new PrivateNetwork('key' in init ? { keys: [init.key], timeoutMs: init.timeoutMs } : init).protector()
}

/** The connection seen through the keystreams: what noise and yamux run on. */
class KeyedConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection
  private readonly outbound: KeyStream
  private readonly outKey: Uint8Array
  /** The key and keystream of what the peer sends, once trial decryption found them. */
  private inKey: Uint8Array | null = null
  private inbound: KeyStream | null = null
  /** What arrived before the first MULTISTREAM_HEADER.length bytes were all there. */
  private early: Uint8Array[] = []
  private earlyBytes = 0
  peerId: string | null = null

  constructor (init: { maConn: MultiaddrConnection, remoteNonce: Uint8Array, accepted: () => Uint8Array[], outKey: Uint8Array, outbound: KeyStream, onMismatch: (remoteAddr: string) => void, log: Logger }) {
    super({ log: init.log, remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction })
    this.maConn = init.maConn
    this.outbound = init.outbound
    this.outKey = init.outKey
    const remoteNonce = Uint8Array.from(init.remoteNonce)
    const receive = (chunk: Uint8Array): void => {
      if (this.inbound != null) {
        this.onData(this.inbound.xor(chunk))
        return
      }
      // Copied: a handful of bytes, held past the event that lent them.
      this.early.push(Uint8Array.from(chunk))
      this.earlyBytes += chunk.length
      if (this.earlyBytes < MULTISTREAM_HEADER.length) return
      const all = concat(this.early, this.earlyBytes)
      this.early = []
      const found = trialDecrypt(init.accepted(), remoteNonce, all.subarray(0, MULTISTREAM_HEADER.length))
      if (found == null) {
        init.onMismatch(this.maConn.remoteAddr.toString())
        throw new MeshKeyMismatchError()
      }
      this.inKey = found.key
      this.inbound = found.stream
      const plain = new Uint8Array(all.length)
      plain.set(MULTISTREAM_HEADER)
      plain.set(found.stream.xor(all.subarray(MULTISTREAM_HEADER.length)), MULTISTREAM_HEADER.length)
      this.onData(plain)
    }
    this.maConn.addEventListener('message', evt => {
      try {
        const data = evt.data
        if (data instanceof Uint8Array) receive(data)
        else for (const buf of data) receive(buf)
      } catch (err) {
        // Never out of an event handler (that would be the process): this connection ends.
        this.maConn.abort(err as Error)
      }
    })
    this.maConn.addEventListener('drain', () => { this.onMuxerDrain() })
    this.maConn.addEventListener('close', evt => {
      if (evt.error == null) this.onTransportClosed()
      else if (evt.local === true) this.abort(evt.error)
      else this.onRemoteReset()
    })
  }

  link (): KeyedLink {
    return { in: this.inKey, out: this.outKey, peerId: this.peerId, remoteAddr: this.maConn.remoteAddr.toString(), abort: err => { this.maConn.abort(err) } }
  }

  async sendClose (options?: AbortOptions): Promise<void> {
    await this.maConn.close(options)
  }

  sendData (data: Parameters<AbstractMultiaddrConnection['sendData']>[0]): { sentBytes: number, canSendMore: boolean } {
    return { sentBytes: data.byteLength, canSendMore: this.maConn.send(this.outbound.xor(data.subarray())) }
  }

  sendReset (err: Error): void {
    this.maConn.abort(err)
  }

  sendPause (): void {
    this.maConn.pause()
  }

  sendResume (): void {
    this.maConn.resume()
  }
}

function concat (chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}
