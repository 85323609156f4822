/**
 * The files of deploy/ against the code: every command line in the
 * Containerfile, compose.yaml, the Kubernetes manifests and the systemd
 * unit uses options that exist (`capmesh controller`'s from
 * CONTROLLER_OPTIONS, `capmesh worker`'s from its help) and resolves to a
 * valid controller configuration; names, ports, selectors, Secret keys and
 * mounts agree with each other; the certificates cover what controllers
 * advertise; every container has probes and resource requests.
 *
 * Structure and consistency, not the Kubernetes API schemas (no schema
 * package here); test/integration/deploy-containers.test.ts runs the image,
 * the compose file and the manifests' command lines where podman is available.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { CONTROLLER_OPTIONS, controllerFlags, parseRawConfig, readConfigFile, resolveControllerConfig, type ControllerConfig } from '../../src/config.ts'
import { DEFAULT_HTTPS_PORT, DEFAULT_P2P_PORT } from '../../src/constants.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8')

/** `--name value` / `--name=value` pairs of a command line, in order; a flag with no value is `true`. */
function flagPairs (args: string[]): Array<[string, string | true]> {
  const out: Array<[string, string | true]> = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (!a.startsWith('--')) continue
    const eq = a.indexOf('=')
    if (eq > 0) out.push([a.slice(2, eq), a.slice(eq + 1)])
    else if (i + 1 < args.length && !args[i + 1].startsWith('--')) out.push([a.slice(2), args[++i]])
    else out.push([a.slice(2), true])
  }
  return out
}

const REPEATABLE = new Set(Object.entries(CONTROLLER_OPTIONS).filter(([, o]) => (o as { repeatable?: boolean }).repeatable === true).map(([k]) => k.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)))

/** A `capmesh controller` command line (without the word `controller`) as the CLI would resolve it. */
function controllerConfig (args: string[], where: string): ControllerConfig {
  const known = new Set(controllerFlags().map(f => f.flags.split(' ')[0].slice(2)))
  const raw: Record<string, unknown> = {}
  for (const [k, v] of flagPairs(args)) {
    expect(known.has(k), `${where}: --${k} is not an option of capmesh controller`).toBe(true)
    if (REPEATABLE.has(k)) raw[k] = [...(raw[k] as string[] ?? []), v]
    else raw[k] = v
  }
  return resolveControllerConfig(parseRawConfig(raw, where))
}

/** The options of a capmesh subcommand (`['worker']`, `['certs', 'init']`), from its help (the one declaration of them); each asked once. */
const helpCache = new Map<string, Set<string>>()
function subcommandFlags (words: string[]): Set<string> {
  const key = words.join(' ')
  let flags = helpCache.get(key)
  if (flags == null) {
    const help = execFileSync(process.execPath, [join(ROOT, 'bin/capmesh.js'), ...words, '--help'], { encoding: 'utf8' })
    helpCache.set(key, flags = new Set([...help.matchAll(/--([a-z][a-z-]*)/g)].map(m => m[1])))
  }
  return flags
}
const workerFlags = subcommandFlags(['worker'])

function workerArgs (args: string[], where: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const [k, v] of flagPairs(args)) {
    expect(workerFlags.has(k), `${where}: --${k} is not an option of capmesh worker`).toBe(true)
    out.set(k, String(v))
  }
  for (const required of ['id', 'capability', 'controllers']) expect(out.has(required), `${where}: --${required}`).toBe(true)
  return out
}

const dnsBootstrap = (a: string): { name: string, port: number } => {
  const m = /^\/dns4\/([^/]+)\/tcp\/(\d+)$/.exec(a)
  expect(m, `${a} is a /dns4/NAME/tcp/PORT address`).not.toBeNull()
  return { name: m![1], port: Number(m![2]) }
}

describe('deploy/Containerfile', () => {
  const text = read('deploy/Containerfile')
  const lines = text.split('\n').filter(l => !l.startsWith('#'))

  it('builds on node:22-slim, installs production dependencies only, runs as a non-root numeric user', () => {
    expect(text).toMatch(/^ARG NODE_IMAGE=node:22-slim$/m)
    expect(lines.filter(l => l.startsWith('FROM ')).length).toBe(2)
    expect(text).toMatch(/npm ci --omit=dev/)
    expect(text).toMatch(/^USER 10001:10001$/m)
    expect(text).toMatch(new RegExp(`^EXPOSE ${DEFAULT_HTTPS_PORT} ${DEFAULT_P2P_PORT}$`, 'm'))
  })

  it('copies files that exist, and its entry point, health check and default command work together', () => {
    for (const m of text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const src of m[1].split(' ')) expect(existsSync(join(ROOT, src)), `COPY ${src}`).toBe(true)
    }
    expect(text).toMatch(/^ENTRYPOINT \["node", "bin\/capmesh.js"\]$/m)
    expect(text).toMatch(/^HEALTHCHECK .* CMD \["node", "deploy\/healthcheck.mjs"\]$/m)
    expect(text).toMatch(/^COPY deploy\/healthcheck.mjs \.\/deploy\/healthcheck.mjs$/m)
    const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(text)![1]) as string[]
    expect(cmd[0]).toBe('controller')
    const cfg = controllerConfig(cmd.slice(1), 'Containerfile CMD')
    expect(cfg).toMatchObject({ host: '0.0.0.0', dataDir: '/var/lib/capmesh', tlsDir: '/tls' })
    // The health check's defaults are the default command's.
    const hc = read('deploy/healthcheck.mjs')
    expect(hc).toContain(`'https://127.0.0.1:${cfg.httpsPort}/health'`)
    expect(hc).toContain(`'${cfg.tlsDir}/ca.pem'`)
  })
})

describe('deploy/compose.yaml', () => {
  // Compose applies YAML merge keys (<<: *anchor).
  const doc = parse(read('deploy/compose.yaml'), { merge: true }) as { services: Record<string, any>, volumes: Record<string, unknown> }
  const services = doc.services
  const controllers = Object.entries(services).filter(([, s]) => s.command?.[0] === 'controller')
  const workers = Object.entries(services).filter(([, s]) => s.command?.[0] === 'worker')
  const configs = new Map(controllers.map(([name, s]) => [name, controllerConfig(s.command.slice(1), `compose ${name}`)]))

  it('runs three controllers and two demo workers after a one-shot certs service', () => {
    expect(controllers.map(([n]) => n)).toEqual(['c1', 'c2', 'c3'])
    expect(workers.map(([n]) => n)).toEqual(['w1', 'w2'])
    for (const [name, s] of [...controllers, ...workers]) {
      expect(s.depends_on?.certs?.condition, name).toBe('service_completed_successfully')
      expect(s.image, name).toBe(services.certs.image)
    }
  })

  it('each controller binds every interface, advertises its service name, and bootstraps from the others by name at their p2p ports', () => {
    for (const [name, s] of controllers) {
      const cfg = configs.get(name)!
      expect(cfg.host).toBe('0.0.0.0')
      expect(cfg.advertise).toEqual([name])
      expect(s.hostname).toBe(name)
      const others = controllers.map(([n]) => n).filter(n => n !== name)
      expect(cfg.bootstrap.map(dnsBootstrap)).toEqual(others.map(n => ({ name: n, port: configs.get(n)!.p2pPort })))
      // Its data on a volume of its own, the TLS dir on the shared one, which holds no CA key.
      expect(s.volumes).toContain(`${name}-data:${cfg.dataDir}`)
      expect(s.volumes).toContain(`tls:${cfg.tlsDir}`)
      expect(cfg.tlsFiles).toBeUndefined()
      expect(s.ports.every((p: string) => p.startsWith('127.0.0.1:') && p.endsWith(`:${cfg.httpsPort}`)), `${name} publishes its HTTPS port on loopback only`).toBe(true)
    }
  })

  // The certs service's script: `capmesh ...` lines (its shell function runs bin/capmesh.js), then a copy.
  const script = (services.certs.command as string[]).join('\n').split('\n').map(l => l.trim())
  const capmeshLines = script.filter(l => l.startsWith('capmesh ')).map(l => l.split(/\s+/).slice(1))
  const mountPath = (s: any, volume: string): string | undefined => (s.volumes as string[]).find(v => v.startsWith(`${volume}:`))?.split(':')[1]

  // Asks `capmesh <command> --help` once per command: seconds each on a loaded machine.
  it('the certs service runs capmesh commands that exist, with options they take', { timeout: 120_000 }, () => {
    expect(services.certs.entrypoint).toEqual(['sh', '-c'])
    expect(script).toContain('set -e')
    expect(script.find(l => l.startsWith('capmesh ()'))).toContain('node bin/capmesh.js')
    expect(capmeshLines.length).toBeGreaterThan(0)
    for (const args of capmeshLines) {
      const words = args.slice(0, args.findIndex(a => a.startsWith('--')))
      const flags = subcommandFlags(words)
      for (const [k] of flagPairs(args)) expect(flags.has(k), `capmesh ${words.join(' ')}: --${k}`).toBe(true)
    }
  })

  it('the certs service makes a certificate covering every advertised name, a peer key per controller in its data volume with its line in the allow list, and copies what controllers need (no CA key) into their TLS volume', () => {
    const init = capmeshLines.find(a => a[0] === 'certs' && a[1] === 'init')!
    const ca = flagPairs(init).find(([k]) => k === 'dir')![1] as string
    expect(mountPath(services.certs, 'ca')).toBe(ca)
    const hosts = flagPairs(init).filter(([k]) => k === 'host').map(([, v]) => v)
    for (const cfg of configs.values()) for (const a of cfg.advertise) expect(hosts).toContain(a)
    const peerKeys = capmeshLines.filter(a => a[0] === 'peer-key').map(a => Object.fromEntries(flagPairs(a)) as Record<string, string>)
    expect(peerKeys.map(p => p.id)).toEqual([...configs.keys()])
    for (const [name, cfg] of configs) {
      const p = peerKeys.find(k => k.id === cfg.id)!
      // The folder it writes peer.key into is the controller's data volume.
      expect(mountPath(services.certs, `${name}-data`)).toBe(p['data-dir'])
      expect(services[name].volumes).toContain(`${name}-data:${cfg.dataDir}`)
      expect(p.allow).toBe(`${ca}/peers.allow`)
      // Its TLS dir is the tls volume, with the allow list where the controller looks for it.
      expect(cfg.peerAllow).toBe(`${cfg.tlsDir}/peers.allow`)
      expect(cfg.meshKey).toBe(`${cfg.tlsDir}/mesh.key`)
    }
    const tls = mountPath(services.certs, 'tls')!
    // Compose turns $$ into $: each file copied to the tls volume if it differs, replaced in one step.
    const copy = script.map(l => /^for f in ([^;]+); do cmp -s (\S+)\/\$\$f (\S+)\/\$\$f \|\| \{ cp \2\/\$\$f \3\/\.\$\$f\.new && mv \3\/\.\$\$f\.new \3\/\$\$f; \}; done$/.exec(l)).find(m => m != null)
    expect(copy, 'the copy into the controllers\' TLS volume').toBeDefined()
    expect([copy![2], copy![3]]).toEqual([ca, tls])
    expect(copy![1].split(' ').sort()).toEqual(['ca.pem', 'mesh.key', 'peers.allow', 'server-key.pem', 'server.pem'])
    for (const [name, cfg] of configs) expect(mountPath(services[name], 'tls')).toBe(cfg.tlsDir)
    // The identities the commands in its header use.
    for (const role of ['operator', 'client']) expect(capmeshLines.some(a => a[0] === 'certs' && a[1] === 'issue' && a.join(' ').includes(`--role ${role} --name ${role}`)), role).toBe(true)
  })

  it('each worker names the controllers as a failover list of their HTTPS URLs, advertises its service name, and is health-checked on its port', () => {
    const urls = [...configs].map(([n, c]) => `https://${n}:${c.httpsPort}`)
    for (const [name, s] of workers) {
      const w = workerArgs(s.command.slice(1), `compose ${name}`)
      expect(w.get('controllers')!.split(',').sort()).toEqual([...urls].sort())
      expect(w.get('advertise')).toBe(name)
      expect(w.get('host')).toBe('0.0.0.0')
      expect(s.environment.CAPMESH_HEALTH_URL).toBe(`https://127.0.0.1:${w.get('port')!}/health`)
      expect(s.healthcheck.test).toEqual(['CMD', 'node', 'deploy/healthcheck.mjs'])
      // A demo worker's TLS dir is the CA volume: it issues its own certificate and identity there.
      expect(mountPath(s, 'ca')).toBe(w.get('tls-dir'))
      expect(s.environment.CAPMESH_CA).toBe(`${w.get('tls-dir')!}/ca.pem`)
    }
  })

  it('declares every named volume it mounts', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes as string[]) expect(Object.keys(doc.volumes), `${name}: ${v}`).toContain(v.split(':')[0])
    }
  })
})

describe('deploy/kubernetes', () => {
  const dir = 'deploy/kubernetes'
  const kustomization = parse(read(`${dir}/kustomization.yaml`)) as {
    namespace: string, resources: string[], secretGenerator: Array<{ name: string, files: string[] }>, images: Array<{ name: string }>
  }
  const objects = kustomization.resources.flatMap(f => parseAllDocuments(read(`${dir}/${f}`)).map(d => d.toJS() as any))
  const of = (kind: string): any[] => objects.filter(o => o.kind === kind)
  const ns = kustomization.namespace
  const [sts] = of('StatefulSet')
  const [deployment] = of('Deployment')
  const headless = of('Service').find(s => s.spec.clusterIP === 'None')
  const secretKeys = (name: string): string[] => {
    const g = kustomization.secretGenerator.find(s => s.name === name)
    expect(g, `secret ${name} is generated`).toBeDefined()
    // `key=path` names the key; otherwise it is the file's name.
    return g!.files.map(f => f.includes('=') ? f.split('=')[0] : f.split('/').at(-1)!)
  }
  const env = (pod: string, ip = '10.0.0.5'): Record<string, string> => ({ POD_NAME: pod, POD_NAMESPACE: ns, POD_IP: ip })
  const expand = (args: string[], vars: Record<string, string>): string[] => args.map(a => a.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => vars[v] ?? `$(${v})`))
  const controller = sts.spec.template.spec.containers[0]
  const cfgOf = (i: number): ControllerConfig => {
    const args = expand(controller.args, env(`${sts.metadata.name as string}-${i}`))
    expect(args[0]).toBe('controller')
    return controllerConfig(args.slice(1), `StatefulSet pod ${i}`)
  }
  const replicas = sts.spec.replicas as number
  const podName = (i: number): string => `${sts.metadata.name as string}-${i}.${sts.spec.serviceName as string}.${ns}.svc.cluster.local`

  it('holds a namespace, a headless and a client Service, a StatefulSet, a PodDisruptionBudget and a worker Deployment; every file it lists exists', () => {
    expect(objects.map(o => o.kind).sort()).toEqual(['Deployment', 'Namespace', 'PodDisruptionBudget', 'Service', 'Service', 'StatefulSet'])
    expect(of('Namespace')[0].metadata.name).toBe(ns)
    for (const o of objects) expect(typeof o.apiVersion, `${o.kind as string} has an apiVersion`).toBe('string')
    expect(kustomization.images.map(i => i.name)).toContain(controller.image)
    // The generated Secrets' files are made by `capmesh certs init` and never committed.
    expect(read('.gitignore')).toMatch(/^deploy\/kubernetes\/tls\/$/m)
    for (const g of kustomization.secretGenerator) for (const f of g.files) expect(f.split('=').at(-1)!.startsWith('tls/')).toBe(true)
  })

  it('the StatefulSet\'s pods are the headless Service\'s, published before they are ready; selectors match the pod labels', () => {
    expect(sts.spec.serviceName).toBe(headless.metadata.name)
    expect(headless.spec.publishNotReadyAddresses).toBe(true)
    const labels = sts.spec.template.metadata.labels
    expect(labels).toMatchObject(sts.spec.selector.matchLabels)
    for (const svc of of('Service')) expect(labels).toMatchObject(svc.spec.selector)
    expect(labels).toMatchObject(of('PodDisruptionBudget')[0].spec.selector.matchLabels)
    expect(of('PodDisruptionBudget')[0].spec.maxUnavailable).toBe(1)
    expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels)
    // The worker pods are no controllers: no Service or PDB of the controllers selects them.
    expect(deployment.spec.template.metadata.labels).not.toMatchObject(headless.spec.selector)
  })

  it('each controller advertises its stable name and bootstraps from every controller\'s, at the ports its container declares', () => {
    const ports = Object.fromEntries(controller.ports.map((p: { name: string, containerPort: number }) => [p.name, p.containerPort]))
    for (let i = 0; i < replicas; i++) {
      const cfg = cfgOf(i)
      expect(cfg.id).toBe(`${sts.metadata.name as string}-${i}`)
      expect(cfg.host).toBe('0.0.0.0')
      expect(cfg.advertise).toEqual([podName(i)])
      expect(cfg.bootstrap.map(dnsBootstrap)).toEqual(Array.from({ length: replicas }, (_v, k) => ({ name: podName(k), port: cfg.p2pPort })))
      expect(ports).toEqual({ https: cfg.httpsPort, p2p: cfg.p2pPort })
    }
    for (const svc of of('Service')) for (const p of svc.spec.ports) expect(Object.keys(ports)).toContain(p.targetPort)
  })

  it('controllers read their certificate, key, CA and mesh key from the capmesh-tls Secret, read-only, and keep their data on a claim', () => {
    const cfg = cfgOf(0)
    const spec = sts.spec.template.spec
    const mount = controller.volumeMounts.find((m: { name: string }) => spec.volumes.find((v: any) => v.name === m.name)?.secret != null)
    expect(mount.readOnly).toBe(true)
    const secret = spec.volumes.find((v: any) => v.name === mount.name).secret.secretName as string
    const keys = secretKeys(secret)
    for (const file of [cfg.tlsFiles!.cert, cfg.tlsFiles!.key, cfg.tlsFiles!.ca, cfg.meshKey, cfg.peerAllow]) {
      expect(file.startsWith(`${mount.mountPath as string}/`), file).toBe(true)
      expect(keys).toContain(file.split('/').at(-1))
    }
    // Never the CA key: controllers issue nothing.
    expect(keys).not.toContain('ca-key.pem')
    const data = controller.volumeMounts.find((m: { mountPath: string }) => m.mountPath === cfg.dataDir)
    expect(sts.spec.volumeClaimTemplates.map((c: any) => c.metadata.name)).toContain(data.name)
  })

  it('an init container puts each pod\'s own peer key (from a Secret with one per controller, made by capmesh peer-key) into its data volume as peer.key', () => {
    const spec = sts.spec.template.spec
    const init = spec.initContainers.find((c: { name: string }) => c.name === 'peer-key')
    const secretMount = init.volumeMounts.find((m: any) => spec.volumes.find((v: any) => v.name === m.name)?.secret != null)
    expect(secretMount.readOnly).toBe(true)
    const keys = secretKeys(spec.volumes.find((v: any) => v.name === secretMount.name).secret.secretName)
    expect(keys.sort()).toEqual(Array.from({ length: replicas }, (_v, i) => `${sts.metadata.name as string}-${i}.key`))
    const dataMount = init.volumeMounts.find((m: { name: string }) => sts.spec.volumeClaimTemplates.some((c: any) => c.metadata.name === m.name))
    expect(dataMount.mountPath).toBe(cfgOf(0).dataDir)
    expect(init.env.find((e: any) => e.name === 'POD_NAME').valueFrom.fieldRef.fieldPath).toBe('metadata.name')
    for (let i = 0; i < replicas; i++) {
      const cmd = expand(init.command, env(`${sts.metadata.name as string}-${i}`)).join(' ')
      expect(cmd).toContain(`cp ${secretMount.mountPath as string}/${sts.metadata.name as string}-${i}.key ${cfgOf(i).dataDir}/peer.key`)
    }
    // Where kustomization.yaml and docs/deploy.md say capmesh peer-key writes them.
    const files = kustomization.secretGenerator.find(g => g.name === spec.volumes.find((v: any) => v.name === secretMount.name).secret.secretName)!.files
    for (const f of files) {
      const [key, path] = f.split('=')
      const id = key.replace(/\.key$/, '')
      expect(path).toBe(`tls/${id}/peer.key`)
      const line = `capmesh peer-key --id ${id.replace(/-\d+$/, '-$i')} --data-dir deploy/kubernetes/tls/${id.replace(/-\d+$/, '-$i')}`
      expect(read(`${dir}/kustomization.yaml`).replace(/\\\n#?\s*/g, ' ')).toContain(line)
      expect(read('docs/deploy.md').replace(/\\\n\s*/g, ' ')).toContain(line)
    }
  })

  it('docs/deploy.md\'s certs init covers every controller\'s advertised name and the client Service', () => {
    const doc = read('docs/deploy.md')
    for (let i = 0; i < replicas; i++) expect(doc).toContain(`--host ${podName(i)}`)
    const api = of('Service').find(s => s.spec.clusterIP !== 'None')
    expect(doc).toContain(`--host ${api.metadata.name as string}.${ns}.svc.cluster.local`)
    expect(read(`${dir}/kustomization.yaml`)).toContain(`--host ${podName(0)}`)
  })

  it('demo workers use the controllers\' names as their failover list, advertise their pod IP, and get a writable TLS dir holding the CA', () => {
    const spec = deployment.spec.template.spec
    const worker = spec.containers[0]
    const args = expand(worker.args, env('capmesh-demo-worker-abc'))
    expect(args[0]).toBe('worker')
    const w = workerArgs(args.slice(1), 'worker Deployment')
    const https = cfgOf(0).httpsPort
    expect(w.get('controllers')!.split(',')).toEqual(Array.from({ length: replicas }, (_v, i) => `https://${podName(i)}:${https}`))
    expect(w.get('advertise')).toBe('10.0.0.5')
    expect(worker.ports[0].containerPort).toBe(Number(w.get('port')))
    const tls = worker.volumeMounts.find((m: { mountPath: string }) => m.mountPath === w.get('tls-dir'))
    expect(spec.volumes.find((v: any) => v.name === tls.name).emptyDir).toBeDefined()
    const init = spec.initContainers[0]
    const caMount = init.volumeMounts.find((m: any) => spec.volumes.find((v: any) => v.name === m.name)?.secret != null)
    const keys = secretKeys(spec.volumes.find((v: any) => v.name === caMount.name).secret.secretName)
    expect(keys.sort()).toEqual(['ca-key.pem', 'ca.pem'])
    for (const k of keys) expect(init.command.join(' ')).toContain(`${caMount.mountPath as string}/${k}`)
  })

  it('every container runs as the image\'s non-root user with resource requests, and serving ones are probed on /health over HTTPS', () => {
    for (const w of [sts, deployment]) {
      const spec = w.spec.template.spec
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001 })
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        expect(c.resources?.requests?.cpu, `${c.name as string} cpu request`).toBeDefined()
        expect(c.resources?.requests?.memory, `${c.name as string} memory request`).toBeDefined()
        expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true })
      }
      for (const c of spec.containers) {
        for (const probe of ['readinessProbe', 'livenessProbe']) {
          expect(c[probe]?.httpGet, `${c.name as string} ${probe}`).toMatchObject({ path: '/health', port: 'https', scheme: 'HTTPS' })
        }
      }
    }
    expect(controller.startupProbe.httpGet).toMatchObject({ path: '/health', port: 'https', scheme: 'HTTPS' })
  })
})

describe('deploy/systemd', () => {
  const unit = read('deploy/systemd/capmesh-controller.service')
  const directive = (key: string): string[] => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map(m => m[1])

  it('runs capmesh controller with the example config, whose data dir is the unit\'s state dir and only writable path', () => {
    const exec = directive('ExecStart')[0].split(' ')
    expect(exec[1]).toBe('/opt/capmesh/bin/capmesh.js')
    expect(exec[2]).toBe('controller')
    expect(flagPairs(exec.slice(3)).map(([k]) => k)).toEqual(['config'])
    const cfg = resolveControllerConfig(readConfigFile(join(ROOT, 'deploy/systemd/controller.example.json')))
    expect(cfg.dataDir).toBe(`/var/lib/${directive('StateDirectory')[0]}`)
    expect(directive('ReadWritePaths')).toEqual([cfg.dataDir])
    expect(cfg.host).toBe('0.0.0.0')
    expect(cfg.advertise.length).toBeGreaterThan(0)
    expect(cfg.tlsFiles).toBeDefined()
    for (const file of [cfg.tlsFiles!.cert, cfg.tlsFiles!.key, cfg.tlsFiles!.ca, cfg.meshKey, cfg.peerAllow]) expect(file.startsWith(`/etc/${directive('ConfigurationDirectory')[0]}/`)).toBe(true)
    // Its header says how to make the peer key the allow list names, in the unit's data dir.
    expect(unit.replace(/\n#\s*/g, ' ')).toContain(`capmesh.js peer-key --id ${cfg.id} --data-dir ${cfg.dataDir}`)
  })

  it('is hardened, runs as its own user, restarts on failure but not on a bad option (exit code 2)', () => {
    expect(directive('User')).toEqual(['capmesh'])
    expect(directive('NoNewPrivileges')).toEqual(['yes'])
    expect(directive('ProtectSystem')).toEqual(['strict'])
    expect(directive('Restart')).toEqual(['on-failure'])
    expect(directive('RestartPreventExitStatus')).toEqual(['2'])
    expect(directive('CapabilityBoundingSet')).toEqual([''])
  })
})

describe('docs/deploy.md', () => {
  it('every capmesh controller command in it uses options that exist', () => {
    const doc = read('docs/deploy.md').replace(/\\\n\s*/g, ' ')
    const commands = [...doc.matchAll(/capmesh controller ([^\n`]*)/g)].map(m => m[1])
    expect(commands.length).toBeGreaterThan(0)
    const known = new Set([...controllerFlags().map(f => f.flags.split(' ')[0].slice(2)), 'config'])
    for (const c of commands) for (const m of c.matchAll(/--([a-z][a-z-]*)/g)) expect(known.has(m[1]), `--${m[1]} in "${c}"`).toBe(true)
  })
})
