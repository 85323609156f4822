/**
 * The simulation harness's handle on a controller child process: fault
 * commands over the IPC channel Node opens between parent and child (no
 * network surface; only active with the hidden `--sim-control` flag and when
 * the process was spawned with IPC).
 */
import type { Controller } from '../controller/index.ts'

export type SimCommand =
  | { id: number, cmd: 'block', peers: string[] }
  | { id: number, cmd: 'unblock' }
  | { id: number, cmd: 'faults', delayMs: number, lossRate: number }

export interface SimReply { id: number, ok: boolean, error?: string }

export function acceptSimControl (controller: Controller): void {
  if (process.send == null) throw new Error('--sim-control needs an IPC channel (spawned by the simulation harness)')
  process.on('message', (raw: unknown) => {
    const m = raw as SimCommand
    if (m == null || typeof m !== 'object' || typeof m.id !== 'number') return
    const reply = (r: SimReply): void => { process.send?.(r) }
    const run = async (): Promise<void> => {
      switch (m.cmd) {
        case 'block': await controller.p2p.block(m.peers); break
        case 'unblock': controller.p2p.unblock(); break
        case 'faults':
          controller.p2p.faults.delayMs = Math.max(0, m.delayMs)
          controller.p2p.faults.lossRate = Math.min(1, Math.max(0, m.lossRate))
          break
        default: throw new Error(`unknown command ${(m as { cmd: string }).cmd}`)
      }
    }
    run().then(() => { reply({ id: m.id, ok: true }) }, (err: Error) => { reply({ id: m.id, ok: false, error: err.message }) })
  })
  process.on('disconnect', () => {
    // The harness is gone: don't outlive it.
    process.kill(process.pid, 'SIGTERM')
  })
}
