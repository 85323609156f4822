/**
 * Starts controllers and demo workers as child processes (`capmesh
 * controller ...`, `capmesh worker ...`) and learns their URL, peer id and
 * p2p addresses from the start-up log line. Used by `npm start`, `capmesh
 * local`, tests and simulations: everything started here is stopped by its
 * pid.
 *
 * Every child gets an IPC channel, and a capmesh process started with one
 * stops when it closes (cli/signals.ts): its parent is gone, however it
 * died (Ctrl-C, a broken pipe, kill -9). No child outlives its launcher.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { SimCommand, SimEvent, SimReply } from './control.ts'

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
  /** Accept fault and watch commands over the IPC channel (`--sim-control`: simulation harness, benchmarks). @default false */
  ipc?: boolean
  /** Unsolicited events from the child's control channel (see the `watch` command). */
  onEvent?: (e: SimEvent) => void
  /** The `capmesh` script to run (another checkout's, to compare two versions). @default this checkout's bin/capmesh.js */
  cli?: string
  /** Run it inside this network namespace (`ip netns exec`, which execs it: the pid and the IPC channel are its own). @default the launcher's */
  netns?: string
}

/** Stop/kill for a child process, and the tail of its stderr for error messages. */
function lifecycle (child: ChildProcess): { stop: (graceMs?: number) => Promise<void>, kill: () => Promise<void>, stderr: () => string } {
  const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
  const gone = (): boolean => child.exitCode != null || child.signalCode != null
  const err: string[] = []
  child.stderr?.on('data', (d: Buffer) => { err.push(d.toString()) })
  return {
    async stop (graceMs = 5000) {
      if (gone()) return
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(t)
    },
    async kill () {
      if (gone()) return
      child.kill('SIGKILL')
      await exited
    },
    stderr: () => err.join('').slice(-2000)
  }
}

/** Resolves with what `ready` finds in the child's stdout lines; rejects if it exits or times out first. */
async function untilReady<T> (child: ChildProcess, what: string, timeoutMs: number, life: ReturnType<typeof lifecycle>, ready: (line: string) => T | null, onLine?: (line: string) => void): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      done = true
      void life.stop(0)
      reject(new Error(`${what} did not start within ${timeoutMs} ms: ${life.stderr()}`))
    }, timeoutMs)
    createInterface({ input: child.stdout! }).on('line', line => {
      // Every line goes to onLine, before and after readiness.
      onLine?.(line)
      if (done) return
      const value = ready(line)
      if (value == null) return
      done = true
      clearTimeout(timer)
      resolve(value)
    })
    child.once('exit', (code, signal) => {
      if (done) return
      done = true
      clearTimeout(timer)
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready: ${life.stderr()}`))
    })
  })
}

export async function spawnController (init: SpawnInit): Promise<ChildController> {
  const args = [init.cli ?? CLI, 'controller', ...init.args, ...(init.ipc === true ? ['--sim-control'] : [])]
  const [cmd, argv] = init.netns != null ? ['ip', ['netns', 'exec', init.netns, process.execPath, ...args]] : [process.execPath, args]
  const child = spawn(cmd, argv, { cwd: init.cwd, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  const life = lifecycle(child)
  let nextId = 1
  const waiting = new Map<number, { resolve: () => void, reject: (e: Error) => void }>()
  child.on('message', (raw: unknown) => {
    if ((raw as SimEvent)?.event != null) {
      init.onEvent?.(raw as SimEvent)
      return
    }
    const r = raw as SimReply
    const w = waiting.get(r?.id)
    if (w == null) return
    waiting.delete(r.id)
    if (r.ok) w.resolve()
    else w.reject(new Error(r.error ?? 'command failed'))
  })
  child.once('exit', () => {
    for (const w of waiting.values()) w.reject(new Error(`controller ${init.id} exited`))
    waiting.clear()
  })
  const control = async (cmd: DistributiveOmit<SimCommand, 'id'>): Promise<void> => {
    if (init.ipc !== true || child.send == null || !child.connected) throw new Error(`controller ${init.id} has no control channel (spawn it with ipc: true)`)
    const id = nextId++
    await new Promise<void>((resolve, reject) => {
      waiting.set(id, { resolve, reject })
      child.send({ ...cmd, id } as SimCommand)
    })
  }
  // The start-up log line (pino JSON) carries the URL, the peer id and the p2p addresses.
  const parse = (line: string): Record<string, unknown> | string => {
    try { return JSON.parse(line) as Record<string, unknown> } catch { return line }
  }
  const info = await untilReady(child, `controller ${init.id}`, init.timeoutMs ?? 20_000, life, line => {
    const parsed = parse(line)
    return typeof parsed === 'object' && typeof parsed.url === 'string' && typeof parsed.peerId === 'string'
      ? { url: parsed.url, peerId: parsed.peerId, p2p: parsed.p2p as string[] }
      : null
  }, init.onLog != null ? line => { init.onLog!(parse(line)) } : undefined)
  return { id: init.id, pid: child.pid!, ...info, process: child, stop: life.stop, kill: life.kill, control }
}

export interface ChildWorker {
  id: string
  pid: number
  url: string
  process: ChildProcess
  stop: (graceMs?: number) => Promise<void>
}

/** Starts `capmesh worker ...` and resolves once it serves and is attached. */
export async function spawnWorker (init: { id: string, args: string[], onLine?: (line: string) => void, timeoutMs?: number, cli?: string }): Promise<ChildWorker> {
  const child = spawn(process.execPath, [init.cli ?? CLI, 'worker', '--id', init.id, ...init.args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  const life = lifecycle(child)
  const url = await untilReady(child, `worker ${init.id}`, init.timeoutMs ?? 20_000, life,
    line => / serving .* at (https:\/\/\S+)$/.exec(line)?.[1] ?? null, init.onLine)
  return { id: init.id, pid: child.pid!, url, process: child, stop: life.stop }
}
