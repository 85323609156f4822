/**
 * `npm run bench:tls` — what a new HTTPS connection costs a worker and a
 * controller, with the project's client (TLS sessions resumed per host:port)
 * and with undici's default session cache (keyed by host name, so every
 * controller on one IP shares one entry and nothing resumes).
 *
 * A reconnect storm (a partition healing, a controller's workers failing
 * over) is made of these handshakes. Two HTTPS servers in a child process,
 * with a certificate from the project CA like a controller's, on two ports
 * of 127.0.0.1, close every connection after one answer; the client (this
 * process) alternates between them. CPU: this process for the client,
 * /proc/<pid>/stat for the servers.
 *
 *   npm run bench:tls -- [--connections 400] [--rounds 3]
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createSecureContext } from 'node:tls'
import { Agent, request } from 'undici'
import { ensureTls } from '../../src/tls/index.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'

const { values } = scriptArgs({
  script: 'bench:tls',
  summary: `What a new HTTPS connection costs a worker and a controller: the project's client (TLS sessions
resumed per host:port) against undici's default session cache, over two servers on 127.0.0.1
that close every connection after one answer.`,
  options: {
    connections: { type: 'string', value: 'N', default: '400', description: 'connections per client and round, 10..100000' },
    rounds: { type: 'string', value: 'N', default: '3', description: 'rounds, each measuring both clients, 1..20' }
  }
})
const N = Number(values.connections)
const ROUNDS = Number(values.rounds)
if (!Number.isInteger(N) || N < 10 || N > 100_000) throw new Error('--connections: an integer 10..100000')
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 20) throw new Error('--rounds: an integer 1..20')

const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-tls-'))
const tls = await ensureTls({ dir: join(root, 'tls') })
const serverScript = `
import { createServer } from 'node:https'
const [cert, key] = [process.env.CERT, process.env.KEY]
const ports = []
for (let i = 0; i < 2; i++) {
  const s = createServer({ cert, key }, (_req, res) => { res.setHeader('content-type', 'application/json'); res.setHeader('connection', 'close'); res.end('{}') })
  await new Promise(resolve => s.listen(0, '127.0.0.1', resolve))
  ports.push(s.address().port)
}
console.log(JSON.stringify(ports))
`
const child = spawn(process.execPath, ['--input-type=module', '-e', serverScript], { env: { ...process.env, CERT: tls.cert, KEY: tls.key }, stdio: ['ignore', 'pipe', 'inherit'] })
const ports = await new Promise<number[]>((resolve, reject) => {
  createInterface({ input: child.stdout! }).once('line', line => { resolve(JSON.parse(line)) })
  child.once('exit', code => { reject(new Error(`server exited (${code})`)) })
})
const urls = ports.map(p => `https://127.0.0.1:${p}/`)

/** user + system CPU of the server process (ms), from /proc. */
function serverCpuMs (): number {
  const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 1000 / 100
}

type Get = (url: string) => Promise<void>
async function measure (get: Get): Promise<{ clientMs: number, serverMs: number, wallMs: number }> {
  for (const u of urls) await get(u) // first handshake with each: full, for both clients
  const c0 = process.cpuUsage()
  const s0 = serverCpuMs()
  const t0 = performance.now()
  for (let i = 0; i < N; i++) await get(urls[i % 2])
  const cpu = process.cpuUsage(c0)
  return { clientMs: (cpu.user + cpu.system) / 1000 / N, serverMs: (serverCpuMs() - s0) / N, wallMs: (performance.now() - t0) / N }
}

const ours = httpsClient({ ca: tls.ca, timeoutMs: 10_000 })
const undiciDefault = new Agent({ connect: { secureContext: createSecureContext({ ca: tls.ca }) } })
const clients: Array<[string, Get]> = [
  ['undici default session cache', async url => { await (await request(url, { dispatcher: undiciDefault })).body.text() }],
  ['capmesh httpsClient (per host:port)', async url => { await ours.json('GET', url) }]
]
console.log(`bench:tls — ${N} new connections per run, alternating between two servers on 127.0.0.1, ${ROUNDS} rounds`)
try {
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, get] of clients) {
      const m = await measure(get)
      console.log(`  round ${r}  ${name.padEnd(36)} client ${m.clientMs.toFixed(2)} ms CPU, server ${m.serverMs.toFixed(2)} ms CPU, ${m.wallMs.toFixed(2)} ms wall per connection`)
    }
  }
} finally {
  await ours.close()
  await undiciDefault.close()
  child.kill('SIGTERM')
  rmSync(root, { recursive: true, force: true })
}
