/**
 * `capmesh` subcommands, thin over the library: parse flags (commander),
 * build a config, call into src/, print results, exit with a clear message
 * and code on bad input (2) or failure (1). Each command loads what it needs
 * when it runs: a `capmesh worker` process never loads libp2p or Yjs.
 */
import { createWriteStream, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { join, resolve } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import { controllerFlags, parseRawConfig, readConfigFile, resolveControllerConfig, type RawConfig } from '../config.ts'
import { CONTROLLER_ID, DEFAULT_IDENTITY_VALIDITY_DAYS, DEFAULT_TRUST_DOMAIN, IDENTITY_ROLES, MESH_KEY_FILE, PEER_KEY_FILE, REGISTRY_STORE_DIR } from '../constants.ts'
import { CapmeshError, ConfigError } from '../errors.ts'
import { readSnapshotAhead } from '../registry/read-ahead.ts'
import { httpsClient } from '../utils/https-client.ts'
import { CALLER_FLAGS, callerTls, type CallerOptions } from './caller.ts'
import { stopOnSignal, stopWithParent } from './signals.ts'
import { traced, workerTracing } from './tracing.ts'
import { parseDuration } from '../utils/duration.ts'

const program = new Command()
  .name('capmesh')
  .description('A peer-to-peer service-registry mesh for capability-routed workers.')
  .showHelpAfterError()
  .exitOverride()

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

const controllerCommand = program.command('controller')
  .description('start one controller (HTTPS API + registry); flags override the config file')
  .option('--config <file>', 'JSON config file (its keys are the option names below, camelCase)')
// Every other flag comes from the one declaration of the options (config.ts).
for (const f of controllerFlags()) {
  if (f.repeatable) controllerCommand.option(f.flags, f.description, collect)
  else controllerCommand.option(f.flags, f.description)
}
controllerCommand
  .addOption(new Option('--sim-control', 'accept fault commands from the parent process over IPC (simulation harness)').hideHelp())
  .action(async (opts: Record<string, unknown>) => {
    const { config: file, simControl, ...flags } = opts
    const layers: RawConfig[] = []
    if (typeof file === 'string') layers.push(readConfigFile(file))
    layers.push(parseRawConfig(flags, 'flag'))
    const config = resolveControllerConfig(...layers)
    // The registry's snapshot (tens of MB for a large one) is read while the controller's modules load.
    const snapshotAhead = readSnapshotAhead(join(config.dataDir, REGISTRY_STORE_DIR))
    const [{ Controller }, { networkFaults }, { acceptSimControl }] = await Promise.all([import('../controller/index.ts'), import('../gossip/index.ts'), import('../launch/index.ts')])
    // Faults exist only where the simulation harness drives them.
    const faults = simControl === true ? networkFaults() : undefined
    const controller = new Controller({ config, faults, snapshotAhead })
    await controller.start()
    if (faults != null) acceptSimControl(controller.view, faults)
    // The route policy, the peer allow list and the mesh keys; each bad file is logged and leaves what is in force.
    process.on('SIGHUP', () => { controller.reload() })
    stopOnSignal(async () => { await controller.stop() })
  })

const certs = program.command('certs').description('local development certificates')
certs.command('init')
  .description('create a CA, a server certificate and the mesh key in DIR (each reused if present)')
  .requiredOption('--dir <dir>', 'TLS dir to create')
  .option('--host <host>', 'extra host name or IP the certificate covers (repeatable)', collect, [])
  .action(async (opts: { dir: string, host: string[] }) => {
    const [{ ensureTls }, { ensureMeshKey }] = await Promise.all([import('../tls/index.ts'), import('../gossip/mesh-key.ts')])
    const tls = await ensureTls({ dir: opts.dir, hosts: opts.host })
    const meshKey = join(opts.dir, MESH_KEY_FILE)
    const { created } = ensureMeshKey(meshKey)
    console.log(`${tls.createdCa ? 'created' : 'reused'} CA ${tls.caPath}`)
    console.log(`server certificate ${tls.certPath} (key ${tls.keyPath})`)
    console.log(`${created ? 'created' : 'reused'} mesh key ${meshKey} (copy it to every controller of the mesh; keep it private)`)
  })

certs.command('issue')
  .description('issue a client certificate carrying an identity (SPIFFE URI SAN), signed by the CA in DIR (which must hold ca-key.pem)')
  .requiredOption('--dir <dir>', 'TLS dir holding ca.pem and ca-key.pem; NAME.pem and NAME-key.pem are written there')
  .requiredOption('--role <role>', `the identity's role: ${IDENTITY_ROLES.join(', ')}`)
  .requiredOption('--name <name>', 'the identity\'s name (a worker\'s id for role worker): letters, digits, ".", "_", "-"')
  .option('--trust-domain <domain>', 'SPIFFE trust domain', DEFAULT_TRUST_DOMAIN)
  .option('--days <n>', 'validity in days', String(DEFAULT_IDENTITY_VALIDITY_DAYS))
  .action(async (opts: { dir: string, role: string, name: string, trustDomain: string, days: string }) => {
    const validityDays = int(opts.days, '--days', 1, 3650)
    if (!(IDENTITY_ROLES as readonly string[]).includes(opts.role)) throw new ConfigError(`--role: expected one of ${IDENTITY_ROLES.join(', ')}, got "${opts.role}"`)
    const { issueIdentity } = await import('../tls/index.ts')
    const issued = await issueIdentity({ dir: opts.dir, role: opts.role as (typeof IDENTITY_ROLES)[number], name: opts.name, trustDomain: opts.trustDomain, validityDays })
    console.log(`identity ${issued.id}`)
    console.log(`${issued.replaced ? 'replaced' : 'wrote'} certificate ${issued.certPath} (client authentication only, valid until ${issued.notAfter.toISOString()})`)
    console.log(`wrote key ${issued.keyPath} (keep it private)`)
  })

const meshKey = program.command('mesh-key')
  .description('the mesh key ring of a controller (rotation: install the new key everywhere, use it everywhere, remove the old one; running controllers pick changes up within 2 s, or at once on SIGHUP)')
/** Adds --mesh-key / --tls-dir to a mesh-key subcommand. */
const keyFile = (c: Command): Command => c
  .option('--mesh-key <file>', 'the mesh key file (default: <tls-dir>/mesh.key)')
  .option('--tls-dir <dir>', 'TLS dir holding mesh.key', '.capmesh/tls')
const keyFileOf = (opts: { meshKey?: string, tlsDir: string }): string => resolve(opts.meshKey ?? join(opts.tlsDir, MESH_KEY_FILE))
keyFile(meshKey.command('list')
  .description('the keys in the file, by id; the first is the primary (new connections are keyed with it), all are accepted'))
  .action(async (opts: { meshKey?: string, tlsDir: string }) => {
    const { meshKeyId, readMeshKeys } = await import('../gossip/mesh-key.ts')
    const file = keyFileOf(opts)
    for (const [i, k] of readMeshKeys(file).entries()) console.log(`${meshKeyId(k)}  ${i === 0 ? 'primary' : 'accepted'}`)
  })
keyFile(meshKey.command('install')
  .description('add a key to the file as an accepted, non-primary key: a new random one, or the one in --from')
  .option('--from <file>', 'take the key from this swarm key file (its primary, e.g. one written by --out on another host)')
  .option('--out <file>', 'also write the key alone to this file (mode 0600), to install it on the other hosts with --from'))
  .action(async (opts: { meshKey?: string, tlsDir: string, from?: string, out?: string }) => {
    const [{ formatMeshKeys, installMeshKey, meshKeyId, newMeshKey, readMeshKey }, { writeFileAtomic }] = await Promise.all([import('../gossip/mesh-key.ts'), import('../utils/files.ts')])
    const file = keyFileOf(opts)
    const key = opts.from != null ? readMeshKey(resolve(opts.from)) : newMeshKey()
    const r = await installMeshKey(file, key)
    if (opts.out != null) writeFileAtomic(resolve(opts.out), formatMeshKeys([key]), 0o600)
    console.log(`${r.changed ? 'installed' : 'already holds'} key ${r.id} in ${file} (accepted; the primary is ${meshKeyId(r.keys[0])})`)
    if (opts.out != null) console.log(`wrote key ${r.id} alone to ${resolve(opts.out)} (keep it private)`)
  })
keyFile(meshKey.command('use')
  .description('make a key of the file the primary (new connections are keyed with it); install it on every controller first')
  .argument('<id>', 'the key\'s id (or at least 4 of its first hex digits), as `list` shows'))
  .action(async (id: string, opts: { meshKey?: string, tlsDir: string }) => {
    const { useMeshKey } = await import('../gossip/mesh-key.ts')
    const file = keyFileOf(opts)
    const r = await useMeshKey(file, id)
    console.log(`${r.changed ? 'primary is now' : 'already the primary:'} key ${r.id} in ${file}`)
  })
keyFile(meshKey.command('remove')
  .description('remove a key from the file (not the primary); connections keyed with it are closed and re-dialled with the primary')
  .argument('<id>', 'the key\'s id (or at least 4 of its first hex digits), as `list` shows'))
  .action(async (id: string, opts: { meshKey?: string, tlsDir: string }) => {
    const { meshKeyId, removeMeshKey } = await import('../gossip/mesh-key.ts')
    const file = keyFileOf(opts)
    const r = await removeMeshKey(file, id)
    console.log(`removed key ${r.id} from ${file}; it holds ${r.keys.map(meshKeyId).join(', ')} (primary ${meshKeyId(r.keys[0])})`)
  })

program.command('peer-key')
  .description('a controller\'s peer key (its libp2p identity, <data-dir>/peer.key), created if missing, ahead of its first start: prints its peer allow list line "<id> <peer-id>"; --allow adds that line to an allow list file')
  .requiredOption('--id <id>', 'the controller id (as its --id)')
  .requiredOption('--data-dir <dir>', 'the controller\'s data dir (give the controller this folder, or its peer.key, as its --data-dir)')
  .option('--allow <file>', 'add (or replace) the controller\'s line in this peer allow list, created if missing; copy it to every controller as --peer-allow')
  .action(async (opts: { id: string, dataDir: string, allow?: string }) => {
    if (!CONTROLLER_ID.test(opts.id)) throw new ConfigError(`--id: "${opts.id}" is not a controller id (letters, digits, ".", "_", "-"; at most 64)`)
    const [{ ensurePeerKey }, { Admission }] = await Promise.all([import('../gossip/keys.ts'), import('../gossip/admission.ts')])
    const file = join(resolve(opts.dataDir), PEER_KEY_FILE)
    const { peerId, created } = await ensurePeerKey(file)
    console.log(`${opts.id} ${peerId}`)
    console.error(`${created ? 'created' : 'reused'} peer key ${file} (keep it private; it is this controller's identity in the mesh)`)
    if (opts.allow != null) {
      const allow = new Admission({ file: resolve(opts.allow) })
      const { written } = await allow.admitSelf(opts.id, peerId)
      console.error(`${written ? 'wrote' : 'already listed:'} ${opts.id} in ${allow.file} (${allow.size} controllers)`)
    }
  })

/** Adds the caller flags (--cert, --key, --token) to a command. */
const calling = (c: Command): Command => {
  for (const [flags, description] of CALLER_FLAGS) c.option(flags, description)
  return c
}

const state = program.command('state').description('export or import a controller registry')
calling(state.command('export')
  .description('write a controller\'s registry as a portable document, JSON or --binary (needs an operator identity)')
  .requiredOption('--controller <url>', 'controller URL, e.g. https://127.0.0.1:9000')
  .option('--ca <file>', 'CA certificate to trust (PEM; default: <tls-dir>/ca.pem)')
  .option('--tls-dir <dir>', 'TLS dir of the mesh (its CA, and operator.pem if there)', '.capmesh/tls')
  .option('--binary', 'the raw Yjs update instead of the JSON document (a quarter smaller; `state import` reads either)')
  .option('--out <file>', 'output file (default: stdout)'))
  .action(traced('state export', async (opts: CallerOptions & { controller: string, out?: string, binary?: boolean }) => {
    const client = httpsClient(callerTls(opts, ['operator']))
    try {
      // Streamed to the file as it arrives: a 100,000-worker registry is ~33 MB (~45 MB as JSON).
      const url = new URL('/state/export', opts.controller)
      url.searchParams.set('format', opts.binary === true ? 'binary' : 'json')
      const res = await client.stream(url.href, { headers: { accept: opts.binary === true ? 'application/octet-stream' : 'application/json' }, timeoutMs: 120_000 })
      try {
        if (res.status !== 200) {
          const chunks: Uint8Array[] = []
          for await (const c of res.body) chunks.push(c)
          throw new Error(`export failed: HTTP ${res.status} ${Buffer.concat(chunks).toString('utf8').slice(0, 500)}`)
        }
        const bytes = { n: 0 }
        const counted = (async function * () { for await (const c of res.body) { bytes.n += c.length; yield c } })()
        await pipeline(counted, opts.out != null ? createWriteStream(opts.out) : process.stdout, { end: opts.out != null })
        if (opts.binary !== true && opts.out == null) process.stdout.write('\n')
        console.error(`exported ${String(res.headers['x-capmesh-workers'] ?? '?')} workers (${bytes.n} bytes${opts.binary === true ? ', binary' : ''}) from ${opts.controller}`)
      } finally {
        res.close()
      }
    } finally {
      await client.close()
    }
  }))
calling(state.command('import')
  .description('merge a portable registry document (JSON or binary) into a controller (needs an operator identity)')
  .argument('<file>', 'document written by `capmesh state export` (with or without --binary)')
  .requiredOption('--controller <url>', 'controller URL')
  .option('--ca <file>', 'CA certificate to trust (PEM; default: <tls-dir>/ca.pem)')
  .option('--tls-dir <dir>', 'TLS dir of the mesh (its CA, and operator.pem if there)', '.capmesh/tls'))
  .action(traced('state import', async (file: string, opts: CallerOptions & { controller: string }) => {
    const client = httpsClient(callerTls(opts, ['operator']))
    try {
      // Sent as read: a JSON document starts with `{` (after any white space); anything else is the raw update.
      const body = readFileSync(file)
      const first = body.find(b => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09)
      const type = first === 0x7b ? 'application/json' : 'application/octet-stream'
      const res = await client.upload(new URL('/state/import', opts.controller).href, body, type, { timeoutMs: 300_000 })
      if (res.status !== 200) throw new Error(`import failed: HTTP ${res.status} ${JSON.stringify(res.body)}`)
      console.log(`imported: ${res.body.added as number} new workers, ${res.body.workers as number} in total`)
    } finally {
      await client.close()
    }
  }))

calling(program.command('route')
  .description('ask a controller for a worker (and, with --invoke, call it)')
  .requiredOption('--verb <verb>', 'verb, e.g. invoke')
  .requiredOption('--capability <name>', 'capability name')
  .option('--controller <url>', 'controller URL', 'https://127.0.0.1:9000')
  .option('--tls-dir <dir>', 'TLS dir of the mesh (its CA, and client.pem or operator.pem if there)', '.capmesh/tls')
  .option('--invoke [text]', 'also POST {text} to the chosen worker\'s /invoke'))
  .action(traced('route', async (opts: CallerOptions & { verb: string, capability: string, controller: string, invoke?: string | boolean }) => {
    const client = httpsClient({ ...callerTls(opts, ['client', 'operator']), timeoutMs: 10_000 })
    try {
      const res = await client.json('POST', new URL('/route', opts.controller).href, { verb: opts.verb, capability: opts.capability })
      console.log(JSON.stringify(res.body, null, 2))
      if (res.status !== 200) {
        process.exitCode = 1
        return
      }
      if (opts.invoke != null && opts.invoke !== false) {
        const text = typeof opts.invoke === 'string' ? opts.invoke : 'hello from capmesh'
        const out = await client.json('POST', new URL('/invoke', res.body.worker_url as string).href, { text, capability: opts.capability })
        console.log(JSON.stringify(out.body, null, 2))
        if (out.status !== 200) process.exitCode = 1
      }
    } finally {
      await client.close()
    }
  }))

calling(program.command('status')
  .description('how each controller and the mesh are doing; exits 1 unless every controller answers, all agree, none is behind or in self-preservation (needs an operator identity)')
  .option('--controller <url>', 'controller URL (repeatable; default: the local mesh, https://127.0.0.1:9000-9002)', collect)
  .option('--tls-dir <dir>', 'TLS dir of the mesh (its CA, and operator.pem if there)', '.capmesh/tls')
  .option('--timeout <duration>', 'how long to wait for each controller', '5s')
  .option('--json', 'print JSON instead of a table'))
  .action(traced('status', async (opts: CallerOptions & { controller?: string[], timeout: string, json?: boolean }) => {
    const urls = opts.controller ?? ['https://127.0.0.1:9000', 'https://127.0.0.1:9001', 'https://127.0.0.1:9002']
    const timeoutMs = parseDuration(opts.timeout, '--timeout')
    const { formatStatus, meshStatus } = await import('./status.ts')
    const client = httpsClient({ ...callerTls(opts, ['operator']), timeoutMs })
    try {
      const status = await meshStatus(client, urls, timeoutMs)
      console.log(opts.json === true ? JSON.stringify(status, null, 2) : formatStatus(status))
      process.exitCode = status.ok ? 0 : 1
    } finally {
      await client.close()
    }
  }))

program.command('worker')
  .description('start a demo worker: serves its capability over HTTPS and stays attached through the agent')
  .requiredOption('--id <id>', 'worker id')
  .requiredOption('--capability <spec>', 'VERB:NAME[@VERSION], e.g. invoke:upper@1.0.0 (repeatable)', collect)
  .requiredOption('--controllers <urls>', 'controller URLs, comma-separated: the failover list')
  .option('--tls-dir <dir>', 'TLS dir of the mesh (its CA is trusted and issues this worker\'s certificate)', '.capmesh/tls')
  .option('--host <host>', 'bind address', '127.0.0.1')
  .option('--advertise <host>', 'host name or IP clients reach this worker at: its URL, covered by its certificate (default: --host)')
  .option('--port <port>', 'HTTPS port (0 = any free port)', '0')
  .option('--heartbeat-interval <duration>', 'heartbeat interval', '1s')
  .option('--affinity <controller-id>', 'preferred controller id')
  .option('--cert <file>', 'the worker\'s client certificate (PEM; default: <tls-dir>/<id>.pem, issued by the mesh\'s CA if missing)')
  .option('--key <file>', 'its private key (PEM)')
  .option('--token <jwt>', 'a bearer token to call as instead of a certificate (@FILE reads it from a file)')
  .action(async (opts: CallerOptions & { id: string, capability: string[], controllers: string, tlsDir: string, host: string, advertise?: string, port: string, heartbeatInterval: string, affinity?: string }) => {
    const [{ startDemoWorker }, tracing] = await Promise.all([import('./worker.ts'), workerTracing()])
    // Only what the flags give; without any, the worker uses (or issues) its own identity.
    const caller = opts.cert != null || opts.key != null || opts.token != null ? callerTls(opts, []) : null
    const identity = caller == null ? undefined : caller.cert != null ? { cert: caller.cert, key: caller.key! } : { token: caller.token as string }
    const w = await startDemoWorker({
      id: opts.id,
      capabilities: opts.capability,
      controllers: opts.controllers.split(',').map(s => s.trim()).filter(s => s.length > 0),
      tlsDir: opts.tlsDir,
      identity,
      host: opts.host,
      advertise: opts.advertise,
      port: int(opts.port, '--port', 0, 65535),
      heartbeatIntervalMs: parseDuration(opts.heartbeatInterval, '--heartbeat-interval'),
      affinity: opts.affinity
    })
    stopOnSignal(async () => {
      await w.agent.drain()
      await w.stop()
      await tracing?.shutdown()
    })
  })

program.command('demo')
  .description('start the 3-controller mesh of nodes/local plus demo workers (what `npm start` runs)')
  .option('--nodes <dir>', 'folder of controller config files', 'nodes/local')
  .action(async (opts: { nodes: string }) => {
    const dir = resolve(opts.nodes)
    const files = readdirSync(dir).filter(f => f.endsWith('.json')).sort().map(f => join(dir, f))
    if (files.length === 0) throw new ConfigError(`no controller configs (*.json) in ${dir}`)
    const { runMesh } = await import('./demo.ts')
    await runMesh({ configs: files })
  })

program.command('local')
  .description('start an N-controller mesh on loopback in one command (generated configs, one shared CA)')
  .option('--controllers <n>', 'number of controllers', '3')
  .option('--workers <m>', 'demo workers (one process each, at most 32), spread over the controllers', '3')
  .option('--https-port <port>', 'HTTPS port of the first controller (the others count up)', '9000')
  .option('--p2p-port <port>', 'libp2p port of the first controller (the others count up)', '9100')
  .option('--root <dir>', 'where generated configs, data and the CA go', '.capmesh')
  .action(async (opts: { controllers: string, workers: string, httpsPort: string, p2pPort: string, root: string }) => {
    const n = int(opts.controllers, '--controllers', 1, 64)
    const m = int(opts.workers, '--workers', 0, 32)
    const httpsBase = int(opts.httpsPort, '--https-port', 1, 65535 - n)
    const p2pBase = int(opts.p2pPort, '--p2p-port', 1, 65535 - n)
    const { generateLocalConfigs, runMesh } = await import('./demo.ts')
    const configs = generateLocalConfigs(n, { root: opts.root, httpsBase, p2pBase })
    await runMesh({ configs, workers: m })
  })

program.command('sim')
  .description('run a simulation scenario from simulations/ against real controllers and agents')
  .argument('<scenario>', 'scenario name (simulations/<name>.ts) or path')
  .option('--nodes <n>', 'controllers (default: the scenario\'s)')
  .option('--workers <m>', 'workers (default: the scenario\'s)')
  .option('--seed <s>', 'seed: same seed, same schedule', '1')
  .option('--duration <d>', 'planned length, e.g. 30s (default: the scenario\'s)')
  .option('--out <dir>', 'write report.json and report.html there')
  .addOption(new Option('--net <network>', 'loopback: every controller on 127.0.0.1; netns: each controller and workers\' place in a network namespace of its own with its own address, faults dropping packets (Linux, root, iproute2, nftables)').choices(['loopback', 'netns']).default('loopback'))
  .addOption(new Option('--bootstrap-by <how>', 'with --net netns: controllers join by address (/ip4/10.77.0.1/tcp/9100) or by name (/dns4/n1.sim/tcp/9100, through the namespaces\' hosts files)').choices(['address', 'name']).default('address'))
  .action(async (name: string, opts: { nodes?: string, workers?: string, seed: string, duration?: string, out?: string, net: 'loopback' | 'netns', bootstrapBy: 'address' | 'name' }) => {
    const { explain, loadScenario, netnsUnavailable, runScenario } = await import('../sim/index.ts')
    if (opts.bootstrapBy === 'name' && opts.net !== 'netns') throw new ConfigError('--bootstrap-by name needs --net netns (names come from the namespaces\' hosts files)')
    if (opts.net === 'netns') {
      const why = netnsUnavailable()
      if (why != null) throw new ConfigError(`--net netns is not available here: ${why}`)
    }
    const s = await loadScenario(name)
    const { result, report, files } = await runScenario(s, {
      nodes: opts.nodes != null ? int(opts.nodes, '--nodes', 2, 64) : undefined,
      workers: opts.workers != null ? int(opts.workers, '--workers', 1, 20_000) : undefined,
      seed: opts.seed,
      durationMs: opts.duration != null ? parseDuration(opts.duration, '--duration') : undefined,
      out: opts.out,
      net: opts.net,
      bootstrapBy: opts.bootstrapBy,
      progress: line => { console.log(line) }
    })
    console.log('')
    for (const v of report.verdicts) console.log(`${v.ok ? 'PASS' : 'FAIL'}  ${v.invariant.padEnd(24)} ${v.summary}`)
    if (!result.ok) console.log(`\n${explain(result)}`)
    if (files != null) console.log(`\nreport: ${files.html}\n        ${files.json}`)
    process.exitCode = result.ok ? 0 : 3
  })

function int (v: string, flag: string, min: number, max: number): number {
  const n = Number(v)
  if (!/^\d+$/.test(v) || n < min || n > max) throw new ConfigError(`${flag}: expected an integer ${min}-${max}, got "${v}"`)
  return n
}

stopWithParent()

// Whoever reads our output went away (`capmesh local | head -3`): stop as on Ctrl-C, so that no
// child is left behind (children also stop on their own when their IPC channel to us closes).
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.kill(process.pid, 'SIGTERM')
})

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : 2)
  }
  if (err instanceof CapmeshError && (err.code === 'CAPMESH_ERR_CONFIG' || err.code === 'CAPMESH_ERR_VALIDATION')) {
    console.error(`capmesh: ${err.message}`)
    process.exit(2)
  }
  console.error(`capmesh: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
}
