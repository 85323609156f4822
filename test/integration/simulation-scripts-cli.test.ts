/**
 * Every runnable script under simulations/ as a person runs it: `--help`
 * lists every option with its default and exits 0, an unknown option is
 * one error line plus the usage line and exit 2. Nothing is started: the
 * options are read before any benchmark or simulation begins.
 *
 * The expected options are written out here, not read from the scripts, so
 * that a renamed flag or a changed default fails this test.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { capmesh } from '../helpers/cli.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** script file → npm script name, and each option → the default its help must show. */
const SCRIPTS: Record<string, { script: string, options: Record<string, string> }> = {
  'simulations/soak.ts': {
    script: 'sim:soak',
    options: { seeds: '50', first: '1', nodes: '8', workers: '1000', duration: '30s', scenario: 'randomized', out: 'reports/soak', net: 'loopback' }
  },
  'simulations/report-screenshot.ts': { script: 'sim:screenshot', options: {} },
  'simulations/dashboard-screenshot.ts': { script: 'dashboard:screenshot', options: { out: 'docs/dashboard.png', phone: 'not set', workers: '12' } },
  'simulations/bench/route.ts': {
    script: 'bench:route',
    options: {
      workers: '10000', capabilities: '100', duration: '10s', warmup: '2s', rounds: '3', connections: '32', pipelining: '1', requests: '5000000',
      'router-workers': '100000', 'decision-time': '300ms', 'skip-http': 'off', 'skip-decision': 'off', only: 'not set', tls: 'mutual,plain',
      'new-connections': '200', otlp: 'off', limits: 'on', 'load-generator': 'off'
    }
  },
  'simulations/bench/register.ts': {
    script: 'bench:register',
    options: { duration: '5s', warmup: '1s', rounds: '2', connections: '32', 'batch-connections': '4', batch: '200', 'load-generator': 'off' }
  },
  'simulations/bench/route-client.ts': {
    script: 'bench:route-client',
    options: { workers: '1000', capabilities: '10', routes: '200000', 'http-routes': '5000', registrations: '200', gap: '20ms' }
  },
  'simulations/bench/mesh.ts': {
    script: 'bench:mesh',
    options: {
      sizes: '8,32', registrations: '200', gap: '20ms', 'heal-workers': '10000', bootstrap: '2', 'mesh-timeout': '60s',
      'profile-heal': 'not set', 'profile-reg': 'not set', settle: '6s', verbose: 'off'
    }
  },
  'simulations/bench/mesh-processes.ts': {
    script: 'bench:mesh-processes',
    options: { sizes: '8,32', registrations: '200', gap: '20ms', 'heal-sizes': '8', 'heal-workers': '10000', 'heal-runs': '3', settle: '6s', poll: '5ms' }
  },
  'simulations/bench/compaction.ts': { script: 'bench:compaction', options: { ops: '1000000', live: '10000' } },
  'simulations/bench/failover.ts': {
    script: 'bench:failover',
    options: {
      workers: '100', heartbeat: '1000', 'capacity-workers': '10000', seconds: '10', rate: '5000', connections: '32', warmup: '2',
      loadgen: 'not set', ca: 'not set', cert: 'not set', key: 'not set', pid: 'not set'
    }
  },
  'simulations/bench/tls-resume.ts': { script: 'bench:tls', options: { connections: '400', rounds: '3' } },
  'simulations/bench/identity.ts': { script: 'bench:identity', options: { n: '20000' } },
  'simulations/bench/footprint.ts': { script: 'bench:footprint', options: { cli: 'not set', settle: '10s' } },
  'simulations/bench/catchup.ts': { script: 'bench:catchup', options: { sizes: '30000,100000', connections: '32', timeout: '300s' } },
  'simulations/bench/state.ts': { script: 'bench:state', options: { workers: '100000', connections: '32' } },
  'simulations/bench/seal-apply.ts': { script: 'bench:seal-apply', options: { entries: '5000,10000', owners: '1', base: '200', rounds: '7', seals: 'both', compare: 'not set', single: 'off', updates: '2000' } },
  'simulations/bench/net-modes.ts': {
    script: 'bench:net-modes',
    options: { scenarios: 'controller-crash-failover,partition-heal,flapping-partition,black-hole', seeds: '1,2', nodes: '5', workers: '100', out: 'reports/net-modes' }
  }
}

interface Run { code: number | null, stdout: string, stderr: string }

/** Runs one script with Node 22 (vitest's own), killed by its pid if it outlives `timeoutMs` (it would be running a benchmark). */
async function run (file: string, args: string[], timeoutMs = 20_000): Promise<Run> {
  const child = spawn(process.execPath, [file, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  const code = await new Promise<number | null>(resolve => child.once('exit', c => { resolve(c) }))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

describe('simulation scripts on the command line', () => {
  it('the list above covers every npm script that runs a file under simulations/', async () => {
    const { default: pkg } = await import('../../package.json', { with: { type: 'json' } })
    const ran = Object.entries(pkg.scripts as Record<string, string>).flatMap(([name, cmd]) => {
      const m = /^node (simulations\/\S+\.ts)$/.exec(cmd)
      return m == null ? [] : [[m[1], name]]
    })
    expect(Object.fromEntries(ran)).toEqual(Object.fromEntries(Object.entries(SCRIPTS).map(([file, s]) => [file, s.script])))
  })

  for (const [file, { script, options }] of Object.entries(SCRIPTS)) {
    it(`${script}: --help lists every option with its default; an unknown option exits 2`, async () => {
      // One child at a time: the suite already runs two files at once on two cores.
      const help = await run(file, ['--help'])
      const bad = await run(file, ['--no-such-option'])

      expect(help.code, help.stderr).toBe(0)
      expect(help.stdout.split('\n')[0]).toMatch(new RegExp(`^usage: npm run ${script} -- `))
      for (const [name, def] of Object.entries(options)) {
        const line = help.stdout.split('\n').find(l => new RegExp(`^\\s+(-\\w, )?--${name}( |$)`).test(l))
        expect(line, `--${name} in the help of ${script}`).toBeDefined()
        expect(line).toContain(`(default: ${def})`)
      }
      expect(help.stdout).toMatch(/-h, --help/)

      expect(bad.code).toBe(2)
      expect(bad.stdout).toBe('')
      const lines = bad.stderr.trimEnd().split('\n')
      expect(lines).toHaveLength(2)
      expect(lines[0]).toBe(`${script}: unknown option --no-such-option`)
      expect(lines[1]).toMatch(new RegExp(`^usage: npm run ${script} -- `))
    }, 60_000)
  }

  // Every script gets -h from the same helper (test/unit/simulations/args.test.ts): one end-to-end check is enough.
  it('-h is --help', async () => {
    const file = 'simulations/bench/compaction.ts'
    const help = await run(file, ['--help'])
    const h = await run(file, ['-h'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('--ops N')
    expect(h).toEqual(help)
  }, 60_000)
})

describe('capmesh sim: the network options', () => {
  it('--bootstrap-by name needs --net netns, and --net takes loopback or netns: exit 2 saying so, before anything starts', async () => {
    const byName = await capmesh(['sim', 'partition-heal', '--bootstrap-by', 'name'])
    expect(byName.code).toBe(2)
    expect(byName.stderr).toContain('--bootstrap-by name needs --net netns')
    const bad = await capmesh(['sim', 'partition-heal', '--net', 'docker'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--net <network>.*docker.*(loopback|netns)/s)
  })
})
