/**
 * The wire contract, proven with a worker in another language: a Python 3
 * standard-library script (test/fixtures/python_worker.py: urllib + ssl with
 * the project CA) registers with a real `capmesh controller` child process,
 * heartbeats, and — when the controller is restarted with an empty data dir
 * on the same port — gets `worker_not_registered` and re-registers on its
 * own, routable again. SIGTERM deregisters it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { freePort, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

const SCRIPT = resolve(import.meta.dirname, '../fixtures/python_worker.py')

let bed: TestBed
const controllers: ChildController[] = []
const pythons: ChildProcess[] = []

beforeAll(async () => { bed = await testBed('python-worker') })
afterAll(async () => { await bed.cleanup() })
afterEach(async () => {
  for (const p of pythons.splice(0)) {
    if (p.exitCode != null || p.signalCode != null) continue
    const exited = new Promise<void>(resolve => p.once('exit', () => { resolve() }))
    process.kill(p.pid!, 'SIGKILL')
    await exited
  }
  for (const c of controllers.splice(0)) await c.stop()
})

describe('a Python worker speaking only the wire contract', () => {
  it('registers, heartbeats, re-registers by itself after the controller lost its state, deregisters on SIGTERM', async () => {
    const port = await freePort()
    const dataDir = join(bed.root, 'py-controller')
    const args = [
      '--id', 'py-ctl', '--host', '127.0.0.1', '--https-port', String(port), '--p2p-port', '0',
      '--data-dir', dataDir, '--tls-dir', bed.tlsDir,
      '--heartbeat-interval', '200ms', '--unhealthy-after', '1s', '--stale-after', '3s', '--log-level', 'info'
    ]
    const first = await controller(args)

    const events: Array<Record<string, any>> = []
    const stderr: string[] = []
    // The worker's own certificate, issued by the mesh's CA: spiffe://capmesh.local/worker/py-1.
    await bed.identity('worker', 'py-1')
    const py = spawn('python3', [
      SCRIPT, '--controller', first.url, '--cafile', join(bed.tlsDir, 'ca.pem'),
      '--certfile', join(bed.tlsDir, 'py-1.pem'), '--keyfile', join(bed.tlsDir, 'py-1-key.pem'),
      '--id', 'py-1', '--url', 'https://127.0.0.1:7999/py-1', '--capability', 'py-upper',
      '--interval', '0.2', '--timeout', '2'
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    pythons.push(py)
    py.stderr.on('data', (d: Buffer) => { stderr.push(d.toString()) })
    createInterface({ input: py.stdout }).on('line', line => { events.push(JSON.parse(line)) })
    const named = (e: string): Array<Record<string, any>> => events.filter(x => x.event === e)

    await eventually(() => named('registered').length === 1, `the Python worker registered (stderr: ${stderr.join('')})`)
    expect(named('registered')[0]).toMatchObject({ worker_id: 'py-1', controller_id: 'py-ctl' })
    await eventually(() => named('heartbeat').length >= 3, 'three heartbeats acknowledged')
    expect(named('heartbeat').every(h => h.state === 'healthy')).toBe(true)
    const routed = await route(first.url)
    expect(routed.status).toBe(200)
    expect(routed.body).toMatchObject({ worker_id: 'py-1', worker_url: 'https://127.0.0.1:7999/py-1', controller_id: 'py-ctl', state: 'healthy' })

    // The controller dies and comes back on the same port with nothing in its data dir.
    process.kill(first.pid, 'SIGKILL')
    await new Promise<void>(resolve => first.process.once('exit', () => { resolve() }))
    rmSync(dataDir, { recursive: true, force: true })
    await eventually(() => named('heartbeat_error').length > 0, 'heartbeats fail while the controller is down')
    const second = await controller(args)
    expect(second.url).toBe(first.url)

    await eventually(() => named('reregistered').length === 1, 'the Python worker re-registered on worker_not_registered')
    expect(named('reregistered')[0]).toMatchObject({ worker_id: 'py-1', controller_id: 'py-ctl' })
    expect(named('registered')).toHaveLength(1)
    const again = await route(second.url)
    expect(again.status).toBe(200)
    expect(again.body).toMatchObject({ worker_id: 'py-1', state: 'healthy' })
    const beats = named('heartbeat').length
    await eventually(() => named('heartbeat').length >= beats + 2, 'heartbeats acknowledged by the new controller')

    const exited = new Promise<number | null>(resolve => py.once('exit', code => { resolve(code) }))
    process.kill(py.pid!, 'SIGTERM')
    expect(await exited).toBe(0)
    expect(named('deregistered')[0]).toMatchObject({ status: 200, body: { status: 'deregistered', worker_id: 'py-1', known: true } })
    const gone = await route(second.url)
    expect(gone.status).toBe(404)
  })
})

async function route (base: string): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', `${base}/route`, { verb: 'invoke', capability: 'py-upper' })
}

async function controller (args: string[]): Promise<ChildController> {
  const c = await spawnController({ id: 'py-ctl', args })
  controllers.push(c)
  return c
}
