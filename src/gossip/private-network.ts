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
 */
import type { AbortOptions, Logger, MessageStream, MultiaddrConnection } from '@libp2p/interface'
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils'
import { xsalsa20 } from '@noble/ciphers/salsa.js'

export const NONCE_BYTES = 24
export const KEY_BYTES = 32
const BLOCK = 64
const ZERO_BLOCK = new Uint8Array(BLOCK)
/** noble takes a 32-bit block counter: 2^32 blocks of 64 bytes (256 GiB) per direction, then the connection is closed (and re-dialled). */
const MAX_BLOCKS = 2 ** 32 - 1

/** The XSalsa20 keystream of (key, nonce) as a stream: chunks of any size, in order. */
export class KeyStream {
  private readonly key: Uint8Array
  private readonly nonce: Uint8Array
  /** Bytes of keystream used so far. */
  private offset = 0

  constructor (key: Uint8Array, nonce: Uint8Array) {
    if (key.length !== KEY_BYTES) throw new RangeError(`the key must be ${KEY_BYTES} bytes`)
    if (nonce.length !== NONCE_BYTES) throw new RangeError(`the nonce must be ${NONCE_BYTES} bytes`)
    this.key = key
    this.nonce = nonce
  }

  /** `data` XOR the next `data.length` bytes of keystream (a new array). */
  xor (data: Uint8Array): Uint8Array {
    const out = new Uint8Array(data.length)
    if (data.length === 0) return out
    if ((this.offset + data.length) / BLOCK >= MAX_BLOCKS) throw new RangeError('keystream exhausted on this connection')
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

export interface PrivateNetworkInit {
  /** The 32-byte mesh key. */
  key: Uint8Array
  /** The nonce exchange must finish within this (ms). @default 5000 */
  timeoutMs?: number
}

/** A libp2p `connectionProtector` factory for the mesh key. */
export function privateNetwork (init: PrivateNetworkInit): () => { protect: (connection: MessageStream, options?: AbortOptions) => Promise<MessageStream> } {
  if (init.key.length !== KEY_BYTES) throw new RangeError(`the mesh key must be ${KEY_BYTES} bytes`)
  const key = Uint8Array.from(init.key)
  const timeoutMs = init.timeoutMs ?? 5000
  return () => ({
    async protect (connection, options) {
      const log = connection.log.newScope('mesh-key')
      const localNonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES))
      const opts = options?.signal != null ? options : { signal: AbortSignal.timeout(timeoutMs) }
      const bytes = byteStream(connection)
      const [remote] = await Promise.all([bytes.read({ bytes: NONCE_BYTES, ...opts }), bytes.write(localNonce, opts)])
      return new KeyedConnection({
        maConn: bytes.unwrap() as MultiaddrConnection,
        inbound: new KeyStream(key, remote.subarray()),
        outbound: new KeyStream(key, localNonce),
        log
      })
    }
  })
}

/** The connection seen through the keystreams: what noise and yamux run on. */
class KeyedConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection
  private readonly outbound: KeyStream

  constructor (init: { maConn: MultiaddrConnection, inbound: KeyStream, outbound: KeyStream, log: Logger }) {
    super({ log: init.log, remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction })
    this.maConn = init.maConn
    this.outbound = init.outbound
    const inbound = init.inbound
    this.maConn.addEventListener('message', evt => {
      try {
        const data = evt.data
        if (data instanceof Uint8Array) this.onData(inbound.xor(data))
        else for (const buf of data) this.onData(inbound.xor(buf))
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
