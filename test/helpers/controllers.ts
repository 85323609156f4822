/**
 * Test helpers: real controllers on ephemeral loopback ports, with data dirs
 * under a temp folder and one shared TLS dir (the project's own CA), and an
 * HTTPS client that trusts that CA and calls as an operator (a client
 * certificate the CA issued: controllers ask every caller who it is).
 * Identities of any role come from `identity()`. Everything started is
 * stopped by `cleanup()`.
 */
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Logger } from 'pino'
import { localPreset, resolveControllerConfig, type RawConfig } from '../../src/config.ts'
import { Controller, type ControllerInit } from '../../src/controller/index.ts'
import { networkFaults, PeerSeals, type NetworkFaults, type Resolve } from '../../src/gossip/index.ts'
import { Registry } from '../../src/registry/index.ts'
import type { Role } from '../../src/identity/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'

/** What a caller presents: the CA it trusts, and its client certificate and key (PEM). */
export interface CallerTls { ca: string, cert: string, key: string }

export interface TestBed {
  root: string
  tlsDir: string
  ca: string
  /** The operator identity `bed.client` calls with (agents of tests that are not about identity use it too). */
  tls: CallerTls
  client: HttpsClient
  /** A client certificate for `spiffe://capmesh.local/<role>/<name>`, issued by the bed's CA (once per identity). */
  identity: (role: Role, name: string) => Promise<CallerTls>
  /** Starts a controller in-process (local preset: fast timeouts, port 0), optionally with its own resolver; `logger` to read what it logs. */
  start: (overrides?: RawConfig, init?: Pick<ControllerInit, 'resolve' | 'logger' | 'snapshotAhead'>) => Promise<Controller>
  /**
   * A registry of a controller that is not running (an export of another
   * mesh's controller, a bulk load), with a peer key of its own that the
   * bed's allow list admits: the bed's controllers accept its sealed segments.
   */
  admittedRegistry: (controllerId: string) => Promise<Registry>
  cleanup: () => Promise<void>
}

const faults = new WeakMap<Controller, NetworkFaults>()

/** The simulated network faults of a controller a test bed started (partitions, loss, delay). */
export function faultsOf (c: Controller): NetworkFaults {
  const f = faults.get(c)
  if (f == null) throw new Error(`controller ${c.config.id} was not started by a test bed`)
  return f
}

export async function testBed (name = 'capmesh'): Promise<TestBed> {
  const root = mkdtempSync(join(tmpdir(), `${name}-`))
  const tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir })
  const issued = new Map<string, Promise<CallerTls>>()
  const identity = async (role: Role, name: string): Promise<CallerTls> => {
    let p = issued.get(`${role}/${name}`)
    if (p == null) {
      issued.set(`${role}/${name}`, p = issueIdentity({ dir: tlsDir, role, name }).then(i => ({ ca: tls.ca, cert: i.cert, key: i.key })))
    }
    return await p
  }
  // Named after its role: what `capmesh status` and `state` look for in a TLS dir by default.
  const operator = await identity('operator', 'operator')
  const client = httpsClient({ ...operator, timeoutMs: 10_000 })
  const running: Controller[] = []
  let n = 0
  return {
    root,
    tlsDir,
    ca: tls.ca,
    tls: operator,
    client,
    identity,
    async admittedRegistry (controllerId) {
      const key = await generateKeyPair('Ed25519')
      const seals: PeerSeals = new PeerSeals((owner): string | undefined => owner === controllerId ? seals.self : undefined)
      seals.use(key)
      appendFileSync(join(tlsDir, 'peers.allow'), `${controllerId} ${seals.self}\n`)
      return new Registry({ controllerId, seals })
    },
    async start (overrides = {}, init = {}) {
      const id = overrides.id ?? `c${n++}`
      const config = resolveControllerConfig(localPreset({ id, dataDir: join(root, id), tlsDir, ...overrides }))
      const f = networkFaults()
      const c = new Controller({ config, faults: f, ...init })
      faults.set(c, f)
      await c.start()
      running.push(c)
      return c
    },
    async cleanup () {
      for (const c of running.splice(0)) await c.stop().catch(() => {})
      await client.close()
      rmSync(root, { recursive: true, force: true })
    }
  }
}

/** A valid CapabilitySchema with overrides. */
export function capability (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    verb: 'invoke',
    version: '1.0.0',
    input_schema: { type: 'object' },
    output_schema: { type: 'object' },
    requires_gpu: false,
    max_concurrency: 4,
    ...extra
  }
}

/** Polls `check` until it returns truthy or `timeoutMs` passes (then throws with `what`). */
export async function eventually<T> (check: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < end) {
    try {
      const v = await check()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  throw new Error(`timed out waiting for ${what}${last != null ? `: ${String(last)}` : ''}`)
}

/** Waits until `x` and `y` are (yes) or are not (no) connected to each other, both ways. */
export async function connected (x: Controller, y: Controller, yes: boolean, what: string, timeoutMs = 15_000): Promise<void> {
  await eventually(() => x.p2p.connectedPeers().includes(y.p2p.peerId) === yes && y.p2p.connectedPeers().includes(x.p2p.peerId) === yes, what, timeoutMs)
}

/**
 * A TCP port free on 127.0.0.1 right now, for a controller a test restarts
 * on the same port. Picked below Linux's ephemeral range (32768-60999): a
 * port from `listen(0)` could be handed, between this check and the
 * controller's bind, to any other test's outgoing connection or listener
 * (CI once failed with EADDRINUSE that way); nothing takes these unasked.
 */
export async function freePort (): Promise<number> {
  return await freePorts(1)
}

/** `n` consecutive TCP ports free on 127.0.0.1 right now (see freePort), for a CLI that numbers its controllers' ports up from a base. */
export async function freePorts (n: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - n))
    // Hold each port (a plain TCP listener, never served) until all n are known free, then let go.
    const held: Server[] = []
    while (held.length < n) {
      const s = createServer()
      const bound = await new Promise<boolean>(resolve => {
        s.once('error', () => { resolve(false) })
        s.listen(base + held.length, '127.0.0.1', () => { resolve(true) })
      })
      if (!bound) break
      held.push(s)
    }
    const ok = held.length === n
    for (const s of held) await new Promise<void>(resolve => s.close(() => { resolve() }))
    if (ok) return base
  }
  throw new Error(`no ${n} consecutive free ports in 20000-31999 on 127.0.0.1 after 100 tries`)
}

/** The error `fn` throws (fails the test if it throws none). */
export function errorOf (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected an error')
}
