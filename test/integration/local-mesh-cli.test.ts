/**
 * What `npm start` does, as a user runs it: `capmesh local` (the same code
 * as the demo, on ports a test can choose) as a child process starts
 * controller and demo-worker processes, forms the mesh, and prints commands;
 * the printed route goes through a controller the worker is not attached
 * to and reaches the worker over HTTPS; the printed status says the mesh
 * agrees; SIGTERM stops every process it started.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { CLI } from '../../src/launch/index.ts'
import { capmesh } from '../helpers/cli.ts'
import { eventually, freePorts } from '../helpers/controllers.ts'

let root = ''
afterEach(() => { if (root !== '') rmSync(root, { recursive: true, force: true }) })

/** Pids of the processes whose command line mentions `text` (Linux /proc). */
function processesMentioning (text: string): number[] {
  const out: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(text)) out.push(Number(d))
    } catch {}
  }
  return out
}

describe('capmesh local (npm start)', () => {
  it('forms a mesh with demo workers, routes through a controller the worker is not attached to, and stops everything on SIGTERM', async () => {
    root = mkdtempSync(join(tmpdir(), 'local-mesh-'))
    const https = await freePorts(3)
    const p2p = await freePorts(3)
    const child = spawn(process.execPath, [CLI, 'local', '--controllers', '3', '--workers', '2', '--https-port', String(https), '--p2p-port', String(p2p), '--root', root], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const exited = new Promise<number | null>(resolve => child.once('exit', code => { resolve(code) }))
    try {
      await eventually(() => out.includes('Ctrl-C stops everything.'), 'the local mesh to be up', 90_000, 200)
      expect(out).toContain('mesh formed: 3 controllers, every one connected to every other')

      // Route via one controller to a worker attached to another, exactly as printed.
      const via = /Route via (\S+) \(the worker is attached to (\S+)\):/.exec(out)
      expect(via).not.toBeNull()
      expect(via![1]).not.toBe(via![2])
      const route = /npx capmesh route --verb invoke --capability (\S+) --controller (\S+) --tls-dir (\S+) --invoke "hello mesh"/.exec(out)
      expect(route).not.toBeNull()
      const routed = await capmesh(['route', '--verb', 'invoke', '--capability', route![1], '--controller', route![2], '--tls-dir', route![3], '--invoke', 'hello mesh'])
      expect(routed.code).toBe(0)
      const [decision, answer] = routed.stdout.split(/\n(?=\{)/).map(s => JSON.parse(s))
      expect(decision).toMatchObject({ capability: 'upper', controller_id: via![2], state: 'healthy' })
      expect(answer).toMatchObject({ capability: 'upper', result: 'HELLO MESH' })

      // The printed status command: every controller answers and they agree.
      const status = /npx capmesh status (.+)$/m.exec(out)
      expect(status).not.toBeNull()
      const st = await capmesh(['status', ...status![1].trim().split(' ')])
      expect(st.code, st.stderr + st.stdout).toBe(0)
      expect(st.stdout).toContain('OK: 3 of 3 controllers answered; one registry (they agree)')
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
    // Controllers and workers were started with paths under `root`: none is left.
    await eventually(() => processesMentioning(root).length === 0, 'every process it started to exit', 10_000, 100)
  }, 150_000)
})

describe('no child outlives capmesh local', () => {
  /** Starts `capmesh local` with 2 controllers and 1 worker under a fresh root; resolves once they all run. */
  async function launch (): Promise<{ child: ReturnType<typeof spawn>, children: () => number[], out: () => string }> {
    root = mkdtempSync(join(tmpdir(), 'local-orphans-'))
    const https = await freePorts(2)
    const p2p = await freePorts(2)
    const child = spawn(process.execPath, [CLI, 'local', '--controllers', '2', '--workers', '1', '--https-port', String(https), '--p2p-port', String(p2p), '--root', root], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stderr!.on('data', (d: Buffer) => { out += d.toString() })
    const children = (): number[] => processesMentioning(root).filter(p => p !== child.pid)
    return { child, children, out: () => out }
  }

  it('its controllers and workers stop when it is killed with SIGKILL', async () => {
    const { child, children } = await launch()
    let stdout = ''
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString() })
    try {
      await eventually(() => stdout.includes('Ctrl-C stops everything.'), 'the local mesh to be up', 90_000, 200)
      // Both controllers and the worker (their command lines name the root).
      expect(children().length).toBeGreaterThanOrEqual(3)
      child.kill('SIGKILL')
      await eventually(() => children().length === 0, 'every child to stop once the launcher is gone', 30_000, 200)
    } finally {
      for (const p of children()) process.kill(p, 'SIGKILL')
    }
  }, 150_000)

  it('its controllers stop when whoever reads its output goes away (capmesh local | head -3)', async () => {
    const { child, children } = await launch()
    let lines = 0
    try {
      // Read three lines, then close the pipe as `head -3` does.
      await new Promise<void>(resolve => {
        child.stdout!.on('data', (d: Buffer) => {
          lines += d.toString().split('\n').length - 1
          if (lines >= 3) {
            child.stdout!.destroy()
            resolve()
          }
        })
      })
      await eventually(() => child.exitCode != null || child.signalCode != null, 'the launcher to stop on the broken pipe', 90_000, 200)
      await eventually(() => children().length === 0, 'every child to stop', 30_000, 200)
    } finally {
      child.kill('SIGKILL')
      for (const p of children()) process.kill(p, 'SIGKILL')
    }
  }, 150_000)
})
