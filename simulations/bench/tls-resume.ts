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
 * Then the same with servers that ask for a client certificate (as a
 * controller with `--auth required` does): capmesh's client without one
 * (a bearer-token caller) and with one (mutual TLS, a worker identity).
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
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
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
const worker = await issueIdentity({ dir: join(root, 'tls'), role: 'worker', name: 'w1' })
// Two plain servers, then two that ask for a client certificate and verify it against the CA (as a controller with auth).
const serverScript = `
import { createServer } from 'node:https'
const [cert, key, ca] = [process.env.CERT, process.env.KEY, process.env.CA]
const ports = []
for (const mtls of [false, false, true, true]) {
  const opts = mtls ? { cert, key, ca, requestCert: true, rejectUnauthorized: false } : { cert, key }
  const s = createServer(opts, (_req, res) => { res.setHeader('content-type', 'application/json'); res.setHeader('connection', 'close'); res.end('{}') })
  await new Promise(resolve => s.listen(0, '127.0.0.1', resolve))
  ports.push(s.address().port)
}
console.log(JSON.stringify(ports))
`
const child = spawn(process.execPath, ['--input-type=module', '-e', serverScript], { env: { ...process.env, CERT: tls.cert, KEY: tls.key, CA: tls.ca }, stdio: ['ignore', 'pipe', 'inherit'] })
const ports = await new Promise<number[]>((resolve, reject) => {
  createInterface({ input: child.stdout! }).once('line', line => { resolve(JSON.parse(line)) })
  child.once('exit', code => { reject(new Error(`server exited (${code})`)) })
})
const plain = ports.slice(0, 2).map(p => `https://127.0.0.1:${p}/`)
const mutual = ports.slice(2).map(p => `https://127.0.0.1:${p}/`)

/** user + system CPU of the server process (ms), from /proc. */
function serverCpuMs (): number {
  const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 1000 / 100
}

type Get = (url: string) => Promise<void>
async function measure (get: Get, urls: string[]): Promise<{ clientMs: number, serverMs: number, wallMs: number }> {
  for (const u of urls) await get(u) // first handshake with each: full, for both clients
  const c0 = process.cpuUsage()
  const s0 = serverCpuMs()
  const t0 = performance.now()
  for (let i = 0; i < N; i++) await get(urls[i % 2])
  const cpu = process.cpuUsage(c0)
  return { clientMs: (cpu.user + cpu.system) / 1000 / N, serverMs: (serverCpuMs() - s0) / N, wallMs: (performance.now() - t0) / N }
}

const ours = httpsClient({ ca: tls.ca, timeoutMs: 10_000 })
const withCert = httpsClient({ ca: tls.ca, cert: worker.cert, key: worker.key, timeoutMs: 10_000 })
const undiciDefault = new Agent({ connect: { secureContext: createSecureContext({ ca: tls.ca }) } })
const clients: Array<[string, Get, string[]]> = [
  ['undici default session cache', async url => { await (await request(url, { dispatcher: undiciDefault })).body.text() }, plain],
  ['capmesh httpsClient (per host:port)', async url => { await ours.json('GET', url) }, plain],
  ['mTLS server, client without a cert', async url => { await ours.json('GET', url) }, mutual],
  ['mTLS server, client with a cert', async url => { await withCert.json('GET', url) }, mutual]
]
console.log(`bench:tls — ${N} new connections per run, alternating between two servers on 127.0.0.1, ${ROUNDS} rounds`)
try {
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, get, urls] of clients) {
      const m = await measure(get, urls)
      console.log(`  round ${r}  ${name.padEnd(36)} client ${m.clientMs.toFixed(2)} ms CPU, server ${m.serverMs.toFixed(2)} ms CPU, ${m.wallMs.toFixed(2)} ms wall per connection`)
    }
  }
} finally {
  await ours.close()
  await withCert.close()
  await undiciDefault.close()
  child.kill('SIGTERM')
  rmSync(root, { recursive: true, force: true })
}
