/**
 * The simulation harness with one network address per host (`--net
 * netns`): real controller processes, each in a Linux network namespace of
 * its own, bound to its own address, joined by a bridge; partitions that
 * drop packets (nftables at the bridge), a link taken down, a one-way
 * partition and a flapping link; and every namespace, link and process
 * removed afterwards, also after Ctrl-C and after the harness was killed.
 *
 * Needs root, iproute2 and nftables (CI runs as root; .ci/run installs
 * them). Where namespaces cannot be made, the tests are skipped and the
 * reason is printed.
 */
import { spawn } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { CLI } from '../../src/launch/index.ts'
import { explain, loadScenario, NETNS_PREFIX, netnsUnavailable, removeLeftovers, runScenario, scenario } from '../../src/sim/index.ts'
import { eventually } from '../helpers/controllers.ts'

const unavailable = netnsUnavailable()
if (unavailable != null) console.warn(`sim-netns: skipped: ${unavailable}`)

/** This machine's capmesh-sim namespaces of the harness with pid `pid`. */
function namespacesOf (pid: number): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map(l => l.split(' ')[0]).filter(n => n.startsWith(`${NETNS_PREFIX}${pid}-`))
}

const out = mkdtempSync(join(tmpdir(), 'sim-netns-'))
afterAll(() => { rmSync(out, { recursive: true, force: true }) })

describe.skipIf(unavailable != null)('capmesh sim --net netns', () => {
  it('three controllers on three addresses find each other by name (hosts files), bind their own address, advertise their name; a partition dropping packets heals; every invariant holds', async () => {
    const s = scenario({
      name: 'names',
      description: 'partition by dropped packets, heal',
      defaults: { nodes: 3, workers: 30, durationMs: 12_000 },
      async run (sim) {
        await sim.checkpoint('start')
        await sim.at(sim.d(0.1))
        await sim.partition([[0, 1], [2]])
        await sim.at(sim.d(0.5))
        await sim.heal()
        await sim.checkpoint('after heal')
      }
    })
    const { result, report, record } = await runScenario(s, { net: 'netns', bootstrapBy: 'name', seed: '5', out: join(out, 'names') })
    expect(result.ok, explain(result)).toBe(true)
    expect(report.net).toBe('netns')
    expect(report.checkpoints.map(c => c.converged)).toEqual([true, true, true])
    expect(record.faults.map(f => f.name)).toContain('partition')
    // Each controller's start-up line: bound to its own address, announcing its name (its bootstrap list had only names).
    for (const [i, id] of ['n1', 'n2', 'n3'].entries()) {
      const start = readFileSync(join(out, 'names', 'logs', `${id}.log`), 'utf8').split('\n').filter(l => l.length > 0).map(l => JSON.parse(l)).find(l => l.url != null)
      expect(start.url).toBe(`https://10.77.0.${i + 1}:9000`)
      expect(start.p2p).toEqual([`/ip4/10.77.0.${i + 1}/tcp/9100`])
      expect(start.advertised).toEqual([`/dns/n${i + 1}.sim/tcp/9100/p2p/${start.peerId as string}`])
    }
  }, 240_000)

  it('black-hole: failover from a crashed and from a black-holed controller, a one-way partition, a flapping link; every invariant holds', async () => {
    const s = await loadScenario('black-hole')
    const { result, report } = await runScenario(s, { net: 'netns', nodes: 3, workers: 30, durationMs: 24_000, seed: '3' })
    expect(result.ok, explain(result)).toBe(true)
    expect(report.faults.map(f => f.name)).toEqual(expect.arrayContaining(['crash', 'link-down', 'link-up', 'one-way', 'heal']))
    const labels = report.checkpoints.map(c => c.label)
    expect(labels).toContain('failover from a black-holed controller (dropped)')
    expect(report.checkpoints.every(c => c.converged)).toBe(true)
  }, 240_000)

  it('Ctrl-C of capmesh sim removes its namespaces; after kill -9 they are left, and found and removed by their prefix', async () => {
    const start = (): { pid: number, exited: Promise<number | null>, out: () => string } => {
      const child = spawn(process.execPath, [CLI, 'sim', 'partition-heal', '--net', 'netns', '--nodes', '2', '--workers', '4', '--duration', '120s'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let text = ''
      child.stdout.on('data', (d: Buffer) => { text += d.toString() })
      child.stderr.on('data', (d: Buffer) => { text += d.toString() })
      return { pid: child.pid!, exited: new Promise(resolve => child.once('exit', code => { resolve(code) })), out: () => text }
    }
    // Ctrl-C: everything removed by the harness itself.
    const a = start()
    await eventually(() => a.out().includes('running partition-heal'), 'the first run to be up', 90_000, 200)
    expect(namespacesOf(a.pid).length).toBe(5)
    process.kill(a.pid, 'SIGINT')
    await a.exited
    expect(namespacesOf(a.pid)).toEqual([])

    // kill -9: nothing can run in the harness; its children stop with it, its namespaces stay until the next run looks.
    const b = start()
    await eventually(() => b.out().includes('running partition-heal'), 'the second run to be up', 90_000, 200)
    const left = namespacesOf(b.pid)
    expect(left.length).toBe(5)
    process.kill(b.pid, 'SIGKILL')
    await b.exited
    expect(namespacesOf(b.pid)).toEqual(left)
    await eventually(() => left.every(ns => execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).trim() === ''), 'the killed run\'s controllers and relays to stop', 20_000, 200)
    expect(removeLeftovers()).toEqual(expect.arrayContaining(left))
    expect(namespacesOf(b.pid)).toEqual([])
  }, 240_000)
})
