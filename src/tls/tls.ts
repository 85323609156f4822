/**
 * Local development PKI: a CA (`ca.pem`, `ca-key.pem`) and server
 * certificates it signs (issue.ts). Several controllers may start on one
 * TLS dir at once: the dir is locked (proper-lockfile) while files are
 * checked and created, so exactly one CA is made and everyone else reuses
 * it. What exists and is valid is only read: the certificate generator
 * (@peculiar/x509, ~20 MB of a process's memory) is loaded only to make
 * what is missing.
 */
import { X509Certificate as NodeX509 } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import lockfile from 'proper-lockfile'
import { TlsError } from '../errors.ts'

const DAY = 86_400_000
/** Names every local certificate covers, so loopback URLs work whatever the bind host. */
const LOOPBACK = ['localhost', '127.0.0.1', '::1']

export interface TlsMaterial {
  /** PEM server certificate. */
  cert: string
  /** PEM private key of `cert`. */
  key: string
  /** PEM CA certificate to trust. */
  ca: string
  /** Path of the CA certificate (what `curl --cacert` wants). */
  caPath: string
  certPath: string
  keyPath: string
  /** True when this call created the CA. */
  createdCa: boolean
}

export interface EnsureTlsInit {
  /** TLS dir holding `ca.pem` and the certificates. Created if missing. */
  dir: string
  /** Hosts (names or IPs) the server certificate must cover, besides loopback. @default [] */
  hosts?: string[]
  /** Certificate file base name inside `dir`. @default 'server' */
  name?: string
  /** Server certificate lifetime in days. @default 825 */
  validityDays?: number
}

/**
 * Returns the CA and a server certificate for `hosts` from `dir`, creating
 * whatever is missing. An existing certificate that does not cover every
 * host is replaced by one that does (same CA).
 */
export async function ensureTls (init: EnsureTlsInit): Promise<TlsMaterial> {
  const dir = init.dir
  const name = init.name ?? 'server'
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new TlsError(`certificate name "${name}" must be [A-Za-z0-9._-]`)
  const hosts = [...new Set([...LOOPBACK, ...(init.hosts ?? [])].filter(h => h !== '0.0.0.0' && h !== '::'))]
  try {
    mkdirSync(dir, { recursive: true })
  } catch (err) {
    throw new TlsError(`cannot create TLS dir ${dir}: ${(err as Error).message}`, { cause: err })
  }
  let release: (() => Promise<void>) | undefined
  try {
    release = await lockfile.lock(dir, { lockfilePath: join(dir, '.lock'), stale: 15_000, retries: { retries: 100, minTimeout: 20, maxTimeout: 250 } })
    const caPath = join(dir, 'ca.pem')
    const caKeyPath = join(dir, 'ca-key.pem')
    let createdCa = false
    if (!existsSync(caPath) || !existsSync(caKeyPath)) {
      const { createCa } = await import('./issue.ts')
      const ca = await createCa()
      writeAtomic(caKeyPath, ca.key, 0o600)
      writeAtomic(caPath, ca.cert, 0o644)
      createdCa = true
    }
    const certPath = join(dir, `${name}.pem`)
    const keyPath = join(dir, `${name}-key.pem`)
    if (createdCa || !existsSync(certPath) || !existsSync(keyPath) || !covers(readFileSync(certPath, 'utf8'), hosts)) {
      const { issue } = await import('./issue.ts')
      const leaf = await issue(readFileSync(caPath, 'utf8'), readFileSync(caKeyPath, 'utf8'), hosts, init.validityDays ?? 825)
      writeAtomic(keyPath, leaf.key, 0o600)
      writeAtomic(certPath, leaf.cert, 0o644)
    }
    return {
      cert: readFileSync(certPath, 'utf8'),
      key: readFileSync(keyPath, 'utf8'),
      ca: readFileSync(caPath, 'utf8'),
      caPath,
      certPath,
      keyPath,
      createdCa
    }
  } catch (err) {
    if (err instanceof TlsError) throw err
    throw new TlsError(`cannot prepare TLS material in ${dir}: ${(err as Error).message}`, { cause: err })
  } finally {
    await release?.()
  }
}

/** Reads given PEM files (`--tls-cert/--tls-key/--tls-ca`). */
export function loadTlsFiles (files: { cert: string, key: string, ca: string }): TlsMaterial {
  try {
    return {
      cert: readFileSync(files.cert, 'utf8'),
      key: readFileSync(files.key, 'utf8'),
      ca: readFileSync(files.ca, 'utf8'),
      caPath: files.ca,
      certPath: files.cert,
      keyPath: files.key,
      createdCa: false
    }
  } catch (err) {
    throw new TlsError(`cannot read TLS files: ${(err as Error).message}`, { cause: err })
  }
}

/** Reads just the CA certificate a client should trust from a TLS dir. */
export function readCa (dir: string): string {
  try {
    return readFileSync(join(dir, 'ca.pem'), 'utf8')
  } catch (err) {
    throw new TlsError(`no CA in ${dir} (run \`capmesh certs init --dir ${dir}\`): ${(err as Error).message}`, { cause: err })
  }
}

/** True when the PEM certificate is valid now and names every host. */
function covers (pem: string, hosts: string[]): boolean {
  try {
    const cert = new NodeX509(pem)
    if (Date.parse(cert.validTo) < Date.now() + DAY) return false
    return uncovered(pem, hosts).length === 0
  } catch {
    return false
  }
}

/** The hosts (names or IPs) a PEM certificate does not name; all of them if it cannot be read. */
export function uncovered (pem: string, hosts: string[]): string[] {
  let cert: NodeX509
  try {
    cert = new NodeX509(pem)
  } catch {
    return hosts
  }
  return hosts.filter(h => (isIP(h) !== 0 ? cert.checkIP(h) : cert.checkHost(h)) == null)
}

function writeAtomic (path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, data, { mode })
  chmodSync(tmp, mode)
  renameSync(tmp, path)
}
