/**
 * Starts controllers as child processes (`capmesh controller ...`) and
 * learns their URL, peer id and p2p addresses from the start-up log line.
 * Used by `npm start`, `capmesh local`, tests and simulations: everything
 * started here is stopped by its pid.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { SimCommand, SimReply } from '../sim/control.ts'

export const CLI = fileURLToPath(new URL('../../bin/capmesh.js', import.meta.url))

export interface ChildController {
  id: string
  pid: number
  url: string
  peerId: string
  p2p: string[]
  process: ChildProcess
  /** SIGTERM, then SIGKILL if it is not gone within `graceMs`. */
  stop: (graceMs?: number) => Promise<void>
  /** kill -9: no goodbye, no final snapshot. */
  kill: () => Promise<void>
  /** Sends a sim-control command (needs `ipc: true`); resolves when the child has applied it. */
  control: (cmd: DistributiveOmit<SimCommand, 'id'>) => Promise<void>
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

export interface SpawnInit {
  /** Arguments after `capmesh controller`. */
  args: string[]
  /** Label for the output prefix. */
  id: string
  /** Every log line of the child (pino JSON, parsed when possible). */
  onLog?: (line: Record<string, unknown> | string) => void
  /** Give up if it has not said it is listening by then (ms). @default 20000 */
  timeoutMs?: number
  cwd?: string
  /** Open an IPC channel and pass `--sim-control` (simulation harness). @default false */
  ipc?: boolean
}

export async function spawnController (init: SpawnInit): Promise<ChildController> {
  const args = [CLI, 'controller', ...init.args, ...(init.ipc === true ? ['--sim-control'] : [])]
  const child = spawn(process.execPath, args, { cwd: init.cwd, stdio: init.ipc === true ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
  const kill = async (): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    child.kill('SIGKILL')
    await exited
  }
  let nextId = 1
  const waiting = new Map<number, { resolve: () => void, reject: (e: Error) => void }>()
  child.on('message', (raw: unknown) => {
    const r = raw as SimReply
    const w = waiting.get(r?.id)
    if (w == null) return
    waiting.delete(r.id)
    if (r.ok) w.resolve()
    else w.reject(new Error(r.error ?? 'command failed'))
  })
  child.once('exit', () => { for (const w of waiting.values()) w.reject(new Error(`controller ${init.id} exited`)); waiting.clear() })
  const control = async (cmd: DistributiveOmit<SimCommand, 'id'>): Promise<void> => {
    if (child.send == null || !child.connected) throw new Error(`controller ${init.id} has no control channel`)
    const id = nextId++
    await new Promise<void>((resolve, reject) => {
      waiting.set(id, { resolve, reject })
      child.send({ ...cmd, id } as SimCommand)
    })
  }
  const stop = async (graceMs = 5000): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(t)
  }
  const stderr: string[] = []
  child.stderr!.on('data', (d: Buffer) => { stderr.push(d.toString()) })
  return await new Promise<ChildController>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(0)
      reject(new Error(`controller ${init.id} did not start within ${init.timeoutMs ?? 20_000} ms: ${stderr.join('').slice(-2000)}`))
    }, init.timeoutMs ?? 20_000)
    let ready = false
    createInterface({ input: child.stdout! }).on('line', line => {
      let parsed: Record<string, unknown> | string = line
      try { parsed = JSON.parse(line) as Record<string, unknown> } catch {}
      init.onLog?.(parsed)
      if (!ready && typeof parsed === 'object' && typeof parsed.url === 'string' && typeof parsed.peerId === 'string') {
        ready = true
        clearTimeout(timer)
        resolve({ id: init.id, pid: child.pid!, url: parsed.url, peerId: parsed.peerId, p2p: parsed.p2p as string[], process: child, stop, kill, control })
      }
    })
    child.once('exit', (code, signal) => {
      if (ready) return
      clearTimeout(timer)
      reject(new Error(`controller ${init.id} exited (${code ?? signal}) before listening: ${stderr.join('').slice(-2000)}`))
    })
  })
}

export interface ChildWorker {
  id: string
  pid: number
  url: string
  process: ChildProcess
  stop: (graceMs?: number) => Promise<void>
}

/** Starts `capmesh worker ...` and resolves once it serves and is attached. */
export async function spawnWorker (init: { id: string, args: string[], onLine?: (line: string) => void, timeoutMs?: number }): Promise<ChildWorker> {
  const child = spawn(process.execPath, [CLI, 'worker', '--id', init.id, ...init.args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
  const stop = async (graceMs = 5000): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(t)
  }
  const stderr: string[] = []
  child.stderr.on('data', (d: Buffer) => { stderr.push(d.toString()) })
  return await new Promise<ChildWorker>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(0)
      reject(new Error(`worker ${init.id} did not start within ${init.timeoutMs ?? 20_000} ms: ${stderr.join('').slice(-2000)}`))
    }, init.timeoutMs ?? 20_000)
    let ready = false
    createInterface({ input: child.stdout }).on('line', line => {
      init.onLine?.(line)
      const m = / serving .* at (https:\/\/\S+)$/.exec(line)
      if (!ready && m != null) {
        ready = true
        clearTimeout(timer)
        resolve({ id: init.id, pid: child.pid!, url: m[1], process: child, stop })
      }
    })
    child.once('exit', (code, signal) => {
      if (ready) return
      clearTimeout(timer)
      reject(new Error(`worker ${init.id} exited (${code ?? signal}) before serving: ${stderr.join('').slice(-2000)}`))
    })
  })
}
