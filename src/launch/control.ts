/**
 * The simulation harness's handle on a controller child process: fault
 * commands over the IPC channel Node opens between parent and child (no
 * network surface; only active with the hidden `--sim-control` flag and when
 * the process was spawned with IPC). Benchmarks also use it to learn the
 * moment a controller can route a new worker (`watch`) or its registry hash
 * changes (`hashes`), without polling. The child side sees the controller
 * through its view and its injected network faults, nothing else.
 */
import { performance } from 'node:perf_hooks'
import type { ControllerView } from '../core/index.ts'
import type { NetworkFaults } from '../gossip/index.ts'

export type SimCommand =
  | { id: number, cmd: 'block', peers: string[] }
  | { id: number, cmd: 'unblock' }
  | { id: number, cmd: 'faults', delayMs: number, lossRate: number }
  /** Report every new worker whose id starts with `prefix` once it routes healthy for `cap-<worker id>`. */
  | { id: number, cmd: 'watch', prefix: string }
  /** Report (or stop reporting) every change of the registry hash, with the number of workers. */
  | { id: number, cmd: 'hashes', on: boolean }

export interface SimReply { id: number, ok: boolean, error?: string }

/**
 * Unsolicited, at wall-clock `at` (ms, sub-ms precision): a watched worker
 * became routable here, or (while `hashes` is on) the registry hash changed.
 */
export type SimEvent =
  | { event: 'routable', worker: string, at: number }
  | { event: 'hash', hash: string, workers: number, at: number }

/** Sends the registry hash whenever it changes, until `off()`. */
function reportHashes (view: ControllerView): () => void {
  let last = ''
  const send = (): void => {
    const hash = view.registryHash()
    if (hash === last) return
    last = hash
    const ev: SimEvent = { event: 'hash', hash, workers: view.stateCounts().total, at: performance.timeOrigin + performance.now() }
    process.send?.(ev)
  }
  view.on('registry', send)
  send()
  return () => { view.off('registry', send) }
}

/** Reports watched workers as they become routable (healthy) on this controller. */
function watch (view: ControllerView, prefix: string): void {
  const waiting = new Set<string>()
  const check = (id: string): boolean => {
    try {
      const r = view.route({ verb: 'invoke', capability: `cap-${id}` }, null)
      if (r.worker_id !== id || r.state !== 'healthy') return false
    } catch {
      return false
    }
    const ev: SimEvent = { event: 'routable', worker: id, at: performance.timeOrigin + performance.now() }
    process.send?.(ev)
    return true
  }
  // Known but not routable yet (its owner's digest not heard): look again every millisecond, only while any waits.
  let timer: NodeJS.Timeout | null = null
  const retry = (): void => {
    for (const id of waiting) if (check(id)) waiting.delete(id)
    if (waiting.size === 0 && timer != null) {
      clearInterval(timer)
      timer = null
    }
  }
  view.on('registry', change => {
    for (const id of change.added) {
      if (!id.startsWith(prefix)) continue
      if (!check(id)) waiting.add(id)
    }
    if (waiting.size > 0 && timer == null) timer = setInterval(retry, 1)
  })
}

export function acceptSimControl (view: ControllerView, faults: NetworkFaults): void {
  if (process.send == null) throw new Error('--sim-control needs an IPC channel (spawned by the simulation harness)')
  let stopHashes: (() => void) | null = null
  process.on('message', (raw: unknown) => {
    const m = raw as SimCommand
    if (m == null || typeof m !== 'object' || typeof m.id !== 'number') return
    const reply = (r: SimReply): void => { process.send?.(r) }
    const run = async (): Promise<void> => {
      switch (m.cmd) {
        case 'block': await faults.block(m.peers); break
        case 'unblock': faults.unblock(); break
        case 'watch': watch(view, m.prefix); break
        case 'hashes':
          stopHashes?.()
          stopHashes = m.on ? reportHashes(view) : null
          break
        case 'faults':
          faults.set({ delayMs: m.delayMs, lossRate: m.lossRate })
          break
        default: throw new Error(`unknown command ${(m as { cmd: string }).cmd}`)
      }
    }
    run().then(() => { reply({ id: m.id, ok: true }) }, (err: Error) => { reply({ id: m.id, ok: false, error: err.message }) })
  })
}
