/**
 * A TCP proxy on loopback standing for one network path (workers at one
 * place → one controller's HTTPS port, or, with `--net netns`, the Unix
 * socket of a relay inside the workers' namespace: sim/relay.ts). The harness cuts it for partitions
 * (open sockets destroyed, new ones refused) and slows it for `slow()`.
 * TLS passes through untouched: workers still verify the controller.
 */
import { createServer, connect, type Server, type Socket } from 'node:net'

export class FaultProxy {
  private server: Server | null = null
  private readonly sockets = new Set<Socket>()
  /** Where connections go (changes when the controller restarts on a new port): a TCP address or a Unix socket. */
  target: { host: string, port: number } | { path: string }
  /** Connections are refused and open ones destroyed while true. */
  private cut = false
  /** Added one-way latency per chunk (ms). */
  delayMs = 0

  constructor (target: { host: string, port: number } | { path: string }) {
    this.target = target
  }

  get port (): number {
    const a = this.server?.address()
    return a != null && typeof a === 'object' ? a.port : 0
  }

  async start (): Promise<this> {
    this.server = createServer(client => { this.accept(client) })
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject)
      this.server!.listen(0, '127.0.0.1', () => { resolve() })
    })
    return this
  }

  setCut (cut: boolean): void {
    this.cut = cut
    if (cut) for (const s of this.sockets) s.destroy()
  }

  get isCut (): boolean { return this.cut }

  async stop (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>(resolve => { this.server?.close(() => { resolve() }) ?? resolve() })
    this.server = null
  }

  private accept (client: Socket): void {
    if (this.cut) {
      client.destroy()
      return
    }
    const upstream = connect(this.target)
    for (const s of [client, upstream]) {
      this.sockets.add(s)
      s.on('close', () => { this.sockets.delete(s) })
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    this.pipe(client, upstream)
    this.pipe(upstream, client)
  }

  private pipe (from: Socket, to: Socket): void {
    from.on('data', chunk => {
      if (this.delayMs <= 0) {
        to.write(chunk)
        return
      }
      // Pause while the chunk is "in flight", so order is kept and memory bounded.
      from.pause()
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk)
        from.resume()
      }, this.delayMs)
    })
    from.on('end', () => { to.end() })
  }
}
