/**
 * The container image and the deploy/ files, for real, under podman: builds
 * the image (deploy/Containerfile), then
 *
 * - brings up deploy/compose.yaml (3 controllers, 2 demo workers) with
 *   podman-compose and checks that the mesh forms over service names, that a
 *   controller routes to a worker attached to another one and the worker
 *   answers, that the image's health check passes and /health shows the
 *   advertised name, and that a controller recreated at a new address (same
 *   name, same data volume) is back in the mesh;
 * - runs the Kubernetes manifests' command lines as a cluster would:
 *   the StatefulSet's controller arguments (with $(POD_NAME) and
 *   $(POD_NAMESPACE) expanded) in three containers reachable by their
 *   stable names, non-root, with a read-only root file system and the
 *   capmesh-tls files mounted read-only; the worker Deployment's init
 *   command and arguments beside them. No Kubernetes here: the names are
 *   network aliases, the Secret a read-only folder, the claim a volume.
 *
 * `npm run test:containers` (vitest.containers.config.ts), not `npm test`:
 * it needs podman, podman-compose and the base image (node:22-slim, here or
 * from a registry), and a podman that can run containers on this machine,
 * and fails saying which is missing otherwise. Traffic stays on this
 * machine: the containers' own networks, and the controllers' HTTPS ports
 * published on 127.0.0.1.
 */
import { execFile } from 'node:child_process'
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { httpsClient } from '../../src/utils/https-client.ts'
import { eventually, freePorts } from '../helpers/controllers.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const COMPOSE = join(ROOT, 'deploy/compose.yaml')
const PROJECT = `capmesh-test-${process.pid}`
const IMAGE = `localhost/capmesh:test-${process.pid}`

interface Ran { code: number, stdout: string, stderr: string }

async function run (cmd: string, args: string[], opts: { timeoutMs?: number, env?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  return await new Promise(resolve => {
    execFile(cmd, args, { cwd: ROOT, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      const code = err == null ? 0 : typeof (err as NodeJS.ErrnoException).code === 'number' ? (err as unknown as { code: number }).code : 127
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

const lastLine = (r: Ran): string => (r.stderr.trim() || r.stdout.trim()).split('\n').at(-1) ?? ''

/** Why this machine cannot run the test, or null. */
async function missing (): Promise<string | null> {
  if ((await run('podman', ['--version'])).code !== 0) return 'podman is not installed (Debian: apt-get install podman podman-compose)'
  if ((await run('podman-compose', ['--version'])).code !== 0) return 'podman-compose is not installed (Debian: apt-get install podman-compose)'
  if ((await run('podman', ['image', 'exists', 'docker.io/library/node:22-slim'])).code !== 0) {
    const pull = await run('podman', ['pull', 'docker.io/library/node:22-slim'], { timeoutMs: 300_000 })
    if (pull.code !== 0) return `the base image node:22-slim is not here and cannot be pulled (${lastLine(pull)})`
  }
  const probe = await run('podman', ['run', '--rm', 'docker.io/library/node:22-slim', 'node', '-e', '0'], { timeoutMs: 120_000 })
  if (probe.code !== 0) return `podman cannot run a container on this machine (${lastLine(probe)})`
  return null
}

const reason = await missing()
if (reason != null) throw new Error(`npm run test:containers cannot run here: ${reason}`)

/** The image is built once, for every test here. */
beforeAll(async () => {
  const build = await run('podman', ['build', '--format', 'docker', '-f', 'deploy/Containerfile', '-t', IMAGE, '.'], { timeoutMs: 600_000 })
  expect(build.code, `podman build failed:\n${build.stdout.slice(-3000)}\n${build.stderr.slice(-3000)}`).toBe(0)
})

afterAll(async () => {
  await run('podman', ['rmi', '-f', IMAGE])
})

describe('deploy/compose.yaml under podman-compose', () => {
  let env: NodeJS.ProcessEnv
  let ports: number[]
  let caDir: string
  const placeholders: string[] = []

  const compose = async (args: string[], timeoutMs = 180_000): Promise<Ran> => await run('podman-compose', ['-p', PROJECT, '-f', COMPOSE, ...args], { env, timeoutMs })

  /** The container of a compose service. */
  async function container (service: string): Promise<string> {
    const r = await run('podman', ['ps', '-a', '--filter', `label=com.docker.compose.project=${PROJECT}`, '--filter', `label=com.docker.compose.service=${service}`, '--format', '{{.Names}}'])
    const name = r.stdout.trim().split('\n')[0]
    if (name == null || name === '') throw new Error(`no container for service ${service}`)
    return name
  }

  const ip = async (name: string): Promise<string> =>
    (await run('podman', ['inspect', name, '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'])).stdout.trim()

  /** `capmesh <args>` inside worker w1's container, on the compose network, where the operator and client identities are (as the file's header says). */
  const inW1 = async (args: string[]): Promise<Ran> => await run('podman', ['exec', await container('w1'), 'node', 'bin/capmesh.js', ...args], { timeoutMs: 60_000 })

  const status = async (): Promise<Ran> =>
    await inW1(['status', '--tls-dir', '/ca', '--controller', 'https://c1:9000', '--controller', 'https://c2:9000', '--controller', 'https://c3:9000'])

  beforeAll(async () => {
    const base = await freePorts(3)
    ports = [base, base + 1, base + 2]
    env = { CAPMESH_IMAGE: IMAGE, CAPMESH_C1_PORT: String(ports[0]), CAPMESH_C2_PORT: String(ports[1]), CAPMESH_C3_PORT: String(ports[2]) }
    caDir = mkdtempSync(join(tmpdir(), 'capmesh-compose-'))
    // podman-compose 1.0 does not wait for service_completed_successfully: the certs service first.
    const certs = await compose(['up', '-d', 'certs'])
    expect(certs.code, `podman-compose up certs failed:\n${certs.stderr.slice(-3000)}`).toBe(0)
    const waited = await run('podman', ['wait', await container('certs')], { timeoutMs: 180_000 })
    expect(waited.stdout.trim(), `the certs service failed:\n${(await run('podman', ['logs', await container('certs')])).stderr.slice(-3000)}`).toBe('0')
    const up = await compose(['up', '-d'])
    expect(up.code, `podman-compose up failed:\n${up.stderr.slice(-3000)}`).toBe(0)
  })

  afterAll(async () => {
    if (env == null) return
    await compose(['down', '-v'])
    for (const p of placeholders) await run('podman', ['rm', '-f', p])
    const left = (await run('podman', ['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`])).stdout.trim().split('\n').filter(Boolean)
    if (left.length > 0) await run('podman', ['rm', '-f', '-v', ...left])
    const volumes = (await run('podman', ['volume', 'ls', '-q'])).stdout.trim().split('\n').filter(v => v.startsWith(`${PROJECT}_`))
    if (volumes.length > 0) await run('podman', ['volume', 'rm', '-f', ...volumes])
    await run('podman', ['network', 'rm', '-f', `${PROJECT}_default`])
    rmSync(caDir, { recursive: true, force: true })
  })

  it('the three controllers find each other by service name and agree; a controller routes to a worker and the worker answers', async () => {
    await eventually(async () => (await status()).code === 0, 'capmesh status OK in the compose mesh', 120_000, 2000)
    const routed = await inW1(['route', '--verb', 'invoke', '--capability', 'echo', '--controller', 'https://c3:9000', '--tls-dir', '/ca', '--invoke', 'hello from compose'])
    expect(routed.code, routed.stdout + routed.stderr).toBe(0)
    expect(routed.stdout).toMatch(/"worker_id": "w[12]"/)
    expect(routed.stdout).toContain('"result": "hello from compose"')
  })

  it('the image\'s health check passes, and /health on the published port shows the advertised name and no wildcard', async () => {
    const c1 = await container('c1')
    const hc = await run('podman', ['healthcheck', 'run', c1])
    expect(hc.code, hc.stdout + hc.stderr).toBe(0)
    const caPath = join(caDir, 'ca.pem')
    expect((await run('podman', ['cp', `${c1}:/tls/ca.pem`, caPath])).code).toBe(0)
    const client = httpsClient({ ca: readFileSync(caPath, 'utf8'), timeoutMs: 10_000 })
    try {
      const health = await client.json('GET', `https://127.0.0.1:${ports[0]}/health`)
      expect(health.status).toBe(200)
      expect(health.body.controller_id).toBe('c1')
      expect(health.body.mesh.advertised_addrs).toEqual([`/dns/c1/tcp/9100/p2p/${health.body.mesh.peer_id as string}`])
      expect(health.body.mesh.listen_addrs).toEqual(['/ip4/0.0.0.0/tcp/9100'])
      expect(health.body.mesh.connected_peers).toBe(2)
    } finally {
      await client.close()
    }
  })

  it('a controller recreated at a new address (same name, same data volume) is back in the mesh', async () => {
    const old = await container('c2')
    const oldIp = await ip(old)
    const network = `${PROJECT}_default`
    expect((await run('podman', ['rm', '-f', old])).code).toBe(0)
    // Take the address it had, so that the new c2 gets another one.
    const placeholder = `${PROJECT}-placeholder`
    placeholders.push(placeholder)
    expect((await run('podman', ['run', '-d', '--name', placeholder, '--network', network, '--ip', oldIp, '--entrypoint', 'sleep', IMAGE, '600'])).code).toBe(0)
    const up = await compose(['up', '-d', 'c2'])
    expect(up.code, up.stderr.slice(-2000)).toBe(0)
    const fresh = await container('c2')
    expect(await ip(fresh)).not.toBe(oldIp)
    await eventually(async () => {
      const s = await status()
      return s.code === 0 && /c2\s+https:\/\/c2:9000\s+ok\s+\S+\s+\d+\s+2\/2/.test(s.stdout)
    }, 'c2 back at its new address, linked to both others, and the mesh agreeing', 120_000, 2000)
  })
})

describe('deploy/kubernetes command lines in containers', () => {
  const dir = join(ROOT, 'deploy/kubernetes')
  const kustomization = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as { namespace: string, resources: string[] }
  const objects = kustomization.resources.flatMap(f => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map(d => d.toJS() as any))
  const sts = objects.find(o => o.kind === 'StatefulSet')
  const deployment = objects.find(o => o.kind === 'Deployment')
  const ns = kustomization.namespace
  const network = `${PROJECT}-k8s`
  const name = (i: number): string => `${sts.metadata.name as string}-${i}`
  const fqdn = (i: number): string => `${name(i)}.${sts.spec.serviceName as string}.${ns}.svc.cluster.local`
  const expand = (args: string[], vars: Record<string, string>): string[] => args.map(a => a.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => vars[v]))
  const containers: string[] = []
  const volumes: string[] = []
  let secretDir: string
  let keysDir: string
  let caDir: string

  /** A pod: a container on the network, reachable by `aliases`, as the manifest's security context says. */
  async function pod (ctr: string, opts: { aliases: string[], ip?: string, mounts: string[], args: string[], entrypoint?: string[] }): Promise<Ran> {
    containers.push(ctr)
    return await run('podman', [
      'run', '-d', '--name', ctr, '--network', network, ...opts.aliases.flatMap(a => ['--network-alias', a]), ...(opts.ip != null ? ['--ip', opts.ip] : []),
      '--user', '10001:10001', '--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
      ...opts.mounts.flatMap(m => ['-v', m]), ...(opts.entrypoint != null ? ['--entrypoint', opts.entrypoint[0]] : []),
      IMAGE, ...(opts.entrypoint?.slice(1) ?? []), ...opts.args
    ], { timeoutMs: 120_000 })
  }

  const mountOf = (container: any, volume: string): string => container.volumeMounts.find((m: { name: string }) => m.name === volume).mountPath

  beforeAll(async () => {
    // The Secrets as docs/deploy.md makes them (certs init, certs issue, peer-key), readable by the
    // pods' group (Kubernetes: defaultMode 0440 and fsGroup), mounted read-only: capmesh-tls
    // without the CA key, capmesh-peer-keys by pod name, capmesh-worker-ca with it.
    caDir = mkdtempSync(join(tmpdir(), 'capmesh-k8s-ca-'))
    secretDir = mkdtempSync(join(tmpdir(), 'capmesh-k8s-tls-'))
    keysDir = mkdtempSync(join(tmpdir(), 'capmesh-k8s-keys-'))
    const cli = async (args: string[]): Promise<void> => {
      const r = await run(process.execPath, [join(ROOT, 'bin/capmesh.js'), ...args])
      expect(r.code, `capmesh ${args.join(' ')}: ${r.stderr}`).toBe(0)
    }
    await cli(['certs', 'init', '--dir', caDir, ...[0, 1, 2].flatMap(i => ['--host', fqdn(i)])])
    await cli(['certs', 'issue', '--dir', caDir, '--role', 'operator', '--name', 'operator'])
    await cli(['certs', 'issue', '--dir', caDir, '--role', 'client', '--name', 'client'])
    for (let i = 0; i < sts.spec.replicas; i++) {
      await cli(['peer-key', '--id', name(i), '--data-dir', join(caDir, name(i)), '--allow', join(caDir, 'peers.allow')])
      copyFileSync(join(caDir, name(i), 'peer.key'), join(keysDir, `${name(i)}.key`))
    }
    for (const f of ['ca.pem', 'server.pem', 'server-key.pem', 'mesh.key', 'peers.allow']) copyFileSync(join(caDir, f), join(secretDir, f))
    for (const d of [caDir, secretDir, keysDir]) {
      for (const f of readdirSync(d)) chmodSync(join(d, f), 0o444)
      chmodSync(d, 0o755)
    }
    expect((await run('podman', ['network', 'create', network])).code).toBe(0)
  })

  afterAll(async () => {
    if (containers.length > 0) await run('podman', ['rm', '-f', '-v', ...containers])
    if (volumes.length > 0) await run('podman', ['volume', 'rm', '-f', ...volumes])
    await run('podman', ['network', 'rm', '-f', network])
    for (const d of [caDir, secretDir, keysDir]) if (d != null) rmSync(d, { recursive: true, force: true })
  })

  it('the StatefulSet\'s controllers, read-only and non-root, find each other by their stable names; the demo workers attach and are routed to', async () => {
    const controller = sts.spec.template.spec.containers[0]
    const keyInit = sts.spec.template.spec.initContainers.find((c: { name: string }) => c.name === 'peer-key')
    const tlsMount = mountOf(controller, 'tls')
    const dataMount = mountOf(controller, 'data')
    for (let i = 0; i < sts.spec.replicas; i++) {
      const data = `${PROJECT}-data-${i}`
      volumes.push(data)
      // The init container: the pod's own peer key into its (new) data volume.
      const cmd = expand(keyInit.command, { POD_NAME: name(i) })
      const copy = await run('podman', ['run', '--rm', '--user', '10001:10001', '--read-only', '--network', 'none', '-v', `${keysDir}:${mountOf(keyInit, 'peer-keys')}:ro`, '-v', `${data}:${mountOf(keyInit, 'data')}`, '--entrypoint', cmd[0], IMAGE, ...cmd.slice(1)])
      expect(copy.code, copy.stderr).toBe(0)
      const r = await pod(`${PROJECT}-${name(i)}`, {
        aliases: [fqdn(i)],
        mounts: [`${secretDir}:${tlsMount}:ro`, `${data}:${dataMount}`],
        args: expand(controller.args, { POD_NAME: name(i), POD_NAMESPACE: ns })
      })
      expect(r.code, r.stderr).toBe(0)
    }
    // An operator's and a client's commands from a container of their own on the network, holding their identities and the CA certificate.
    const exec = async (args: string[]): Promise<Ran> => await run('podman', ['run', '--rm', '--network', network, '--user', '10001:10001', '-v', `${caDir}:/admin:ro`, IMAGE, ...args], { timeoutMs: 90_000 })
    const urls = [0, 1, 2].flatMap(i => ['--controller', `https://${fqdn(i)}:9000`])
    await eventually(async () => (await exec(['status', '--tls-dir', '/admin', ...urls])).code === 0, 'the three controllers agree', 120_000, 2000)

    // The demo workers: the init container copies the CA into the writable TLS dir, then the worker starts.
    const spec = deployment.spec.template.spec
    const worker = spec.containers[0]
    const initC = spec.initContainers[0]
    const subnet = JSON.parse((await run('podman', ['network', 'inspect', network])).stdout)[0].subnets[0].subnet as string
    for (let k = 0; k < deployment.spec.replicas; k++) {
      const podName = `capmesh-demo-worker-${k}`
      const ip = subnet.replace(/\.0\/24$/, `.${200 + k}`)
      const tls = `${PROJECT}-worker-tls-${k}`
      volumes.push(tls)
      const ca = `${caDir}:${mountOf(initC, 'ca')}:ro`
      const copy = await run('podman', ['run', '--rm', '--user', '10001:10001', '--read-only', '--network', 'none', '-v', ca, '-v', `${tls}:${mountOf(initC, 'tls')}`, '--entrypoint', initC.command[0], IMAGE, ...initC.command.slice(1)])
      expect(copy.code, copy.stderr).toBe(0)
      const r = await pod(`${PROJECT}-${podName}`, {
        aliases: [],
        ip,
        mounts: [`${tls}:${mountOf(worker, 'tls')}`],
        args: expand(worker.args, { POD_NAME: podName, POD_NAMESPACE: ns, POD_IP: ip })
      })
      expect(r.code, r.stderr).toBe(0)
    }
    await eventually(async () => {
      const routed = await exec(['route', '--verb', 'invoke', '--capability', 'echo', '--controller', `https://${fqdn(2)}:9000`, '--tls-dir', '/admin', '--invoke', 'hello from a pod'])
      return routed.code === 0 && routed.stdout.includes('"result": "hello from a pod"')
    }, 'a worker routed to from capmesh-2 and answering', 90_000, 2000)
  })
})
