/**
 * One network address per simulated host: Linux network namespaces joined
 * by a bridge, for `capmesh sim --net netns`. Needs root and iproute2
 * (`ip`); nftables (`nft`) for partitions.
 *
 * Layout (every name starts with `capmesh-sim-<pid>-`, so a run's leftovers
 * are found by that prefix):
 *
 *   <prefix>br        the bridge `br0`, and one veth end per host (`n1`, `h1`, ...)
 *   <prefix>n<i>      controller i: `eth0` with 10.77.0.<i>/16 (and `lo`)
 *   <prefix>h<j>      the place of the workers homed at controller j: 10.77.1.<j>/16
 *
 * The addresses exist only inside these namespaces (the host's network is
 * not touched, and concurrent runs do not collide: each has its own bridge).
 * The harness, in the host's namespace, reaches a namespace through a relay
 * process started inside it (sim/relay.ts) that forwards connections from a
 * Unix socket (a file: visible from every namespace) to an address there.
 *
 * Faults act on packets, at the bridge: a partition is an nftables rule in
 * the bridge's `forward` hook that drops frames between two groups' addresses
 * (nothing answers: no reset, no refusal; connections hang until their own
 * timeouts); a one-way partition drops one direction only; a host's link
 * down (`ip link set down` on its veth end in the bridge namespace) drops
 * everything it sends and everything sent to it.
 *
 * Everything is removed by `destroy()` (on stop, Ctrl-C and exit), and a
 * run that could not (kill -9 of the harness) is cleaned up by the next
 * one: `removeLeftovers()` deletes namespaces whose pid is no longer alive.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../errors.ts'

/** Every namespace a run makes starts with this, then the harness's pid and a dash. */
export const NETNS_PREFIX = 'capmesh-sim-'
/** Controller i (0-based) is 10.77.0.<i+1>; the workers homed at it are at 10.77.1.<i+1>. */
const CONTROLLER_NET = '10.77.0.'
const HOME_NET = '10.77.1.'
const NETMASK = 16
/** Suffix of the per-host names in the hosts files: `n1.sim`. */
export const NETNS_NAME_SUFFIX = '.sim'
const RELAY = fileURLToPath(new URL('./relay.ts', import.meta.url))

/** Why namespaces cannot be made here, or null. */
export function netnsUnavailable (): string | null {
  if (process.platform !== 'linux') return `network namespaces are Linux only (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'network namespaces need root (run as root, or use --net loopback)'
  const which = (cmd: string): boolean => ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].some(d => existsSync(join(d, cmd)))
  if (!which('ip')) return 'iproute2 is not installed (`ip` not found; Debian: apt-get install iproute2)'
  if (!which('nft')) return 'nftables is not installed (`nft` not found; Debian: apt-get install nftables)'
  const probe = `${NETNS_PREFIX}${process.pid}-probe`
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' })
  } catch (err) {
    return `cannot create a network namespace: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`
  }
  try {
    execFileSync('ip', ['netns', 'exec', probe, 'nft', 'add', 'table', 'bridge', 'probe'], { stdio: 'pipe' })
  } catch (err) {
    return `nftables cannot filter bridged traffic here: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`
  } finally {
    try { execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' }) } catch {}
  }
  return null
}

/** Runs `ip`/`nft` and friends, rejecting with their stderr. */
async function run (cmd: string, args: string[], input?: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 20_000 }, (err, _stdout, stderr) => {
      if (err != null) reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`))
      else resolve()
    })
    if (input != null) child.stdin?.end(input)
  })
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Removes the namespaces (and their /etc/netns files) of earlier runs whose
 * harness is gone, killing what still runs in them. Returns their names.
 */
export function removeLeftovers (): string[] {
  let list = ''
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch {
    return []
  }
  const removed: string[] = []
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0]
    const m = new RegExp(`^${NETNS_PREFIX}(\\d+)-`).exec(name)
    if (m == null || alive(Number(m[1]))) continue
    removeNamespace(name)
    removed.push(name)
  }
  return removed
}

/** Kills every process in a namespace (by pid), deletes it and its /etc/netns folder. Synchronous: it also runs at exit. */
function removeNamespace (name: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n').filter(p => /^\d+$/.test(p))
    for (const pid of pids) {
      try { process.kill(Number(pid), 'SIGKILL') } catch {}
    }
  } catch {}
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' }) } catch {}
  rmSync(join('/etc/netns', name), { recursive: true, force: true })
}

export interface NetnsLabInit {
  /** Controllers (and as many worker places). */
  controllers: number
  /** Folder for the relays' Unix sockets (short: a socket path has at most 107 bytes). */
  socketDir: string
  /** HTTPS port every controller listens on (each has its own address). @default 9000 */
  httpsPort?: number
}

interface Relay { process: ChildProcess }

export class NetnsLab {
  readonly prefix: string
  readonly httpsPort: number
  private readonly init: NetnsLabInit
  private readonly names: string[] = []
  private readonly relays: Relay[] = []
  /** Frames dropped at the bridge: [from address, to address]. */
  private drops: Array<[string, string]> = []
  private readonly down = new Set<string>()
  private destroyed = false
  private readonly onExit = (): void => { this.destroySync() }
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.destroySync()
    process.kill(process.pid, sig)
  }

  private constructor (init: NetnsLabInit) {
    this.init = init
    this.prefix = `${NETNS_PREFIX}${process.pid}-`
    this.httpsPort = init.httpsPort ?? 9000
  }

  /** Makes the bridge and a namespace per controller and per worker place, or throws saying why it cannot. */
  static async create (init: NetnsLabInit): Promise<NetnsLab> {
    const why = netnsUnavailable()
    if (why != null) throw new ConfigError(`--net netns: ${why}`)
    if (init.controllers > 250) throw new ConfigError('--net netns: at most 250 controllers')
    removeLeftovers()
    const lab = new NetnsLab(init)
    // Removed on a normal exit, on Ctrl-C / SIGTERM (then the signal is re-raised for the usual handling), and by the next run otherwise.
    process.once('exit', lab.onExit)
    process.once('SIGINT', lab.onSignal)
    process.once('SIGTERM', lab.onSignal)
    try {
      await lab.build()
    } catch (err) {
      await lab.destroy()
      throw err
    }
    return lab
  }

  /** Namespace of controller i / of the workers homed at controller i. */
  controllerNs (i: number): string { return `${this.prefix}n${i + 1}` }
  homeNs (i: number): string { return `${this.prefix}h${i + 1}` }
  private get bridgeNs (): string { return `${this.prefix}br` }

  controllerAddr (i: number): string { return `${CONTROLLER_NET}${i + 1}` }
  homeAddr (i: number): string { return `${HOME_NET}${i + 1}` }
  /** Controller i's name in every namespace's hosts file. */
  controllerName (i: number): string { return `n${i + 1}${NETNS_NAME_SUFFIX}` }

  /** Every controller address and name (what the shared server certificate must cover). */
  get hosts (): string[] {
    return Array.from({ length: this.init.controllers }, (_v, i) => [this.controllerAddr(i), this.controllerName(i)]).flat()
  }

  private async build (): Promise<void> {
    const n = this.init.controllers
    const br = this.bridgeNs
    await this.addNs(br)
    await run('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge'])
    await run('ip', ['-n', br, 'link', 'set', 'br0', 'up'])
    // One table and chain for every partition rule: replaced as a whole on each change.
    await run('ip', ['netns', 'exec', br, 'nft', '-f', '-'], 'table bridge capmesh {\n chain cut { type filter hook forward priority 0; policy accept; }\n}\n')
    const hostsFile = ['127.0.0.1 localhost', ...Array.from({ length: n }, (_v, i) => `${this.controllerAddr(i)} ${this.controllerName(i)}`)].join('\n') + '\n'
    for (let i = 0; i < n; i++) {
      for (const [ns, addr, port] of [[this.controllerNs(i), this.controllerAddr(i), `n${i + 1}`], [this.homeNs(i), this.homeAddr(i), `h${i + 1}`]]) {
        await this.addNs(ns)
        // Names for `/dns4/n2.sim/...`: `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts.
        mkdirSync(join('/etc/netns', ns), { recursive: true })
        writeFileSync(join('/etc/netns', ns, 'hosts'), hostsFile)
        // Made inside the bridge's namespace, the peer moved straight into the host's: nothing in the host's own namespace.
        await run('ip', ['-n', br, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
        await run('ip', ['-n', br, 'link', 'set', port, 'master', 'br0', 'up'])
        await run('ip', ['-n', ns, 'addr', 'add', `${addr}/${NETMASK}`, 'dev', 'eth0'])
        await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up'])
        await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
      }
    }
  }

  private async addNs (name: string): Promise<void> {
    await run('ip', ['netns', 'add', name])
    this.names.push(name)
  }

  /** The command line that runs `argv` inside namespace `ns` (with its hosts file). */
  exec (ns: string, argv: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', ns, ...argv]]
  }

  /**
   * Starts a relay in `ns` that forwards each Unix socket of `routes` to its
   * TCP address; resolves once it listens. It exits when the harness goes
   * (its stdin closes).
   */
  async relay (ns: string, routes: Array<{ socket: string, host: string, port: number }>): Promise<void> {
    for (const r of routes) rmSync(r.socket, { force: true })
    const [cmd, args] = this.exec(ns, [process.execPath, RELAY, ...routes.map(r => `${r.socket}=${r.host}:${r.port}`)])
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    this.relays.push({ process: child })
    let err = ''
    child.stderr!.on('data', (d: Buffer) => { err += d.toString() })
    await new Promise<void>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! })
      rl.once('line', line => { line === 'ready' ? resolve() : reject(new Error(`relay in ${ns}: ${line}`)) })
      child.once('exit', code => { reject(new Error(`relay in ${ns} exited (${code}): ${err.slice(-500)}`)) })
    })
  }

  /**
   * Drops frames between the groups (each a list of host indexes: a
   * controller and the workers homed at it go together), or only from
   * `oneWay.from` to `oneWay.to`. Replaces the previous rules; [] heals.
   */
  async cut (pairs: Array<[number, number]>): Promise<void> {
    const addrs = (i: number): string[] => [this.controllerAddr(i), this.homeAddr(i)]
    this.drops = pairs.flatMap(([a, b]) => addrs(a).flatMap(x => addrs(b).map(y => [x, y] as [string, string])))
    const rules = this.drops.map(([from, to]) => ` add rule bridge capmesh cut ip saddr ${from} ip daddr ${to} drop`)
    await run('ip', ['netns', 'exec', this.bridgeNs, 'nft', '-f', '-'], ['flush chain bridge capmesh cut', ...rules].join('\n') + '\n')
  }

  /** Takes controller i's link down (everything it sends or is sent is dropped) or brings it back. */
  async link (i: number, up: boolean): Promise<void> {
    const port = `n${i + 1}`
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', port, up ? 'up' : 'down'])
    if (up) this.down.delete(port)
    else this.down.add(port)
  }

  /** Controllers whose link is down. */
  linkDown (i: number): boolean { return this.down.has(`n${i + 1}`) }

  async destroy (): Promise<void> {
    this.destroySync()
  }

  /** Kills the relays and removes every namespace and hosts file of this run (synchronous: also at exit). */
  private destroySync (): void {
    if (this.destroyed) return
    this.destroyed = true
    process.off('exit', this.onExit)
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
    for (const r of this.relays) r.process.kill('SIGKILL')
    for (const name of [...this.names].reverse()) removeNamespace(name)
    rmSync(this.init.socketDir, { recursive: true, force: true })
  }
}
