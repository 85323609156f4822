/**
 * `capmesh worker`: a demo worker that really serves its capability over
 * HTTPS (`POST /invoke {"text": ...}`: echo, upper, reverse, or echo for any
 * other name), with a certificate issued by the mesh's local CA, and stays
 * attached through the worker agent. One log line per attach and failover;
 * the agent's counters and state at `GET /metrics` (Prometheus).
 */
import Fastify from 'fastify'
import { workerAgent, type WorkerAgent } from '../agent/index.ts'
import { ConfigError } from '../errors.ts'
import type { Capability } from '../wire/index.ts'
import { agentMetrics, type AgentMetrics } from '../metrics/index.ts'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ensureTls, issueIdentity } from '../tls/index.ts'

export interface DemoWorkerInit {
  id: string
  /** `VERB:NAME[@VERSION]` specs. */
  capabilities: string[]
  controllers: string[]
  tlsDir: string
  /**
   * Who the worker is to controllers: a client certificate and key (PEM), or a bearer token.
   * @default its own worker identity (`<tls-dir>/<id>.pem`), issued by the mesh's CA if missing
   */
  identity?: { cert: string, key: string } | { token: string }
  /** Bind address. @default '127.0.0.1' */
  host?: string
  /** Host name or IP clients reach this worker at: its URL, and its certificate covers it. @default host */
  advertise?: string
  /** 0 = any free port. */
  port?: number
  heartbeatIntervalMs?: number
  affinity?: string
  log?: (line: string) => void
}

const SPEC = /^([A-Za-z0-9._-]+):([A-Za-z0-9._-]+)(?:@([A-Za-z0-9._+-]+))?$/

export function parseCapabilitySpec (spec: string): Capability {
  const m = SPEC.exec(spec)
  if (m == null) throw new ConfigError(`--capability "${spec}": expected VERB:NAME[@VERSION], e.g. invoke:upper@1.0.0`)
  return {
    verb: m[1],
    name: m[2],
    version: m[3] ?? '1.0.0',
    input_schema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
    output_schema: { type: 'object', properties: { result: { type: 'string' } } },
    requires_gpu: false,
    max_concurrency: 16
  }
}

const OPS: Record<string, (s: string) => string> = {
  upper: s => s.toUpperCase(),
  lower: s => s.toLowerCase(),
  reverse: s => [...s].reverse().join(''),
  echo: s => s
}

export async function startDemoWorker (init: DemoWorkerInit): Promise<{ url: string, agent: WorkerAgent, stop: () => Promise<void> }> {
  const log = init.log ?? ((l: string) => { console.log(l) })
  const caps = init.capabilities.map(parseCapabilitySpec)
  if (caps.length === 0) throw new ConfigError('give at least one --capability VERB:NAME[@VERSION]')
  if (init.controllers.length === 0) throw new ConfigError('give --controllers URL,URL,...')
  for (const u of init.controllers) {
    if (!/^https:\/\/[^\s/]+/.test(u)) throw new ConfigError(`--controllers: "${u}" is not an https:// URL`)
  }
  const host = init.host ?? '127.0.0.1'
  // Bound to every interface, the URL needs a name clients can reach (a wildcard in it reaches nobody).
  const advertise = init.advertise ?? host
  if (advertise === '0.0.0.0' || advertise === '::') throw new ConfigError(`--host ${host}: give --advertise with the name or address clients reach this worker at`)
  const certName = `worker-${init.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 56)}`
  const tls = await ensureTls({ dir: init.tlsDir, hosts: [host, advertise], name: certName })
  const identity = init.identity ?? await ownIdentity(init.tlsDir, init.id)
  let inflight = 0

  const app = Fastify({ https: { cert: tls.cert, key: tls.key }, bodyLimit: 64 * 1024 } as any)
  app.get('/health', async () => ({ status: 'ok', worker_id: init.id, inflight }))
  // A plain JSON schema: TypeBox would be ~20 MB of this small process's memory for one body.
  app.post<{ Body: { text: string, capability?: string } }>('/invoke', {
    schema: { body: { type: 'object', required: ['text'], properties: { text: { type: 'string', maxLength: 16_384 }, capability: { type: 'string', maxLength: 256 } } } }
  }, async (req) => {
    inflight++
    try {
      const name = req.body.capability ?? caps[0].name
      const cap = caps.find(c => c.name === name)
      if (cap == null) return await Promise.reject(Object.assign(new Error(`this worker does not offer ${name}`), { statusCode: 404 }))
      return { worker_id: init.id, capability: cap.name, result: (OPS[cap.name] ?? OPS.echo)(req.body.text) }
    } finally {
      inflight--
    }
  })
  // The agent needs this server's URL, so it exists only once listening; routes must be declared before.
  let metrics: AgentMetrics | null = null
  app.get('/metrics', async (_req, reply) => {
    if (metrics == null) return await reply.code(503).send({ error: 'starting' })
    return await reply.type(metrics.contentType).send(await metrics.text())
  })
  await app.listen({ host, port: init.port ?? 0 })
  const addr = app.server.address()
  const port = typeof addr === 'object' && addr != null ? addr.port : 0
  const url = `https://${advertise.includes(':') ? `[${advertise}]` : advertise}:${port}`

  const agent = workerAgent({
    workerId: init.id,
    workerUrl: url,
    capabilities: caps,
    controllers: init.controllers,
    tls: 'cert' in identity ? { ca: tls.ca, cert: identity.cert, key: identity.key } : { ca: tls.ca },
    token: 'token' in identity ? identity.token : undefined,
    heartbeatIntervalMs: init.heartbeatIntervalMs ?? 1000,
    affinity: init.affinity,
    load: () => inflight
  })
  metrics = agentMetrics(agent)
  agent.on('attached', a => { log(`[${init.id}] attached to ${a.controllerId ?? '?'} ${a.controller} (${a.reason}${a.rttMs != null ? `, rtt ${a.rttMs.toFixed(1)} ms` : ''}, incarnation ${agent.incarnation})`) })
  agent.on('failover', f => { log(`[${init.id}] FAILOVER ${f.from} -> ${f.to} (incarnation ${f.incarnation})`) })
  agent.on('reregistered', r => { log(`[${init.id}] re-registered at ${r.controller} (controller had lost its state)`) })
  agent.on('error', e => { log(`[${init.id}] ${e.name}: ${e.message}`) })
  try {
    await agent.start()
  } catch (err) {
    await app.close()
    throw err
  }
  log(`[${init.id}] serving ${caps.map(c => `${c.verb}:${c.name}@${c.version}`).join(', ')} at ${url}`)
  return {
    url,
    agent,
    stop: async () => {
      await agent.stop()
      await app.close()
    }
  }
}

/**
 * The worker's own identity in the mesh's TLS dir (`<id>.pem`, SPIFFE id
 * `spiffe://capmesh.local/worker/<id>`): reused when there, issued by the
 * CA when not (a local mesh holds the CA key; on real hosts, issue it with
 * `capmesh certs issue` or give --cert/--key or --token).
 */
async function ownIdentity (dir: string, id: string): Promise<{ cert: string, key: string }> {
  const certPath = join(dir, `${id}.pem`)
  const keyPath = join(dir, `${id}-key.pem`)
  if (existsSync(certPath) && existsSync(keyPath)) return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') }
  if (!existsSync(join(dir, 'ca-key.pem'))) throw new ConfigError(`no worker identity ${certPath} and no CA key in ${dir} to issue one: give --cert and --key (capmesh certs issue --role worker --name ${id}) or --token`)
  const issued = await issueIdentity({ dir, role: 'worker', name: id })
  return { cert: issued.cert, key: issued.key }
}
