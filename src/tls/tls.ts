/**
 * Local development PKI: a CA (`ca.pem`, `ca-key.pem`), the server
 * certificates it signs and identity (client) certificates (issue.ts).
 * Several controllers may start on one TLS dir at once: the dir is locked
 * (proper-lockfile) while files are checked and created, so exactly one CA
 * is made and everyone else reuses it. What exists and is valid is only
 * read: the certificate generator (@peculiar/x509, ~20 MB of a process's
 * memory) is loaded only to make what is missing.
 *
 * A TLS dir may hold the CA certificate without its key (a controller
 * deployed with certificates issued elsewhere): then nothing is ever made
 * there, and a missing or unusable server certificate is an error. A
 * second CA is never made next to an existing `ca.pem`: clients trust that
 * one.
 */
import { createPrivateKey, X509Certificate as NodeX509 } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { DEFAULT_IDENTITY_VALIDITY_DAYS, DEFAULT_TRUST_DOMAIN, IDENTITY_ROLES, ISSUED_IDENTITY_NAME, TRUST_DOMAIN } from '../constants.ts'
import { ConfigError, TlsError } from '../errors.ts'
import { withDirLock as lockDir, writeFileAtomic } from '../utils/files.ts'

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
 * host (or has expired, or was not signed by `ca.pem`) is replaced by one
 * that does, same CA. Without `ca-key.pem` next to `ca.pem` nothing can be
 * made: the existing certificate is used if it is usable, and otherwise a
 * TlsError says how to issue one where the CA key is.
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
  return await withDirLock(dir, async () => {
    const caPath = join(dir, 'ca.pem')
    const caKeyPath = join(dir, 'ca-key.pem')
    const hasCaKey = existsSync(caKeyPath)
    let createdCa = false
    if (!existsSync(caPath)) {
      if (hasCaKey) throw new TlsError(`${dir} holds a CA key (ca-key.pem) but no CA certificate (ca.pem); restore ca.pem, or remove ca-key.pem to start a new CA (every client must then trust the new ca.pem)`)
      const { createCa } = await import('./issue.ts')
      const ca = await createCa()
      writeAtomic(caKeyPath, ca.key, 0o600)
      writeAtomic(caPath, ca.cert, 0o644)
      createdCa = true
    }
    const caPem = readFileSync(caPath, 'utf8')
    const certPath = join(dir, `${name}.pem`)
    const keyPath = join(dir, `${name}-key.pem`)
    const problem = createdCa ? 'predates the new CA' : serverCertProblem(certPath, keyPath, caPem, hosts)
    if (problem != null) {
      if (!createdCa && !hasCaKey) {
        const extra = hosts.filter(h => !LOOPBACK.includes(h)).map(h => ` --host ${h}`).join('')
        throw new TlsError(`${certPath} ${problem}, and ${dir} holds the CA certificate (ca.pem) without the CA key (ca-key.pem), so no certificate can be made here (nor a second CA: clients trust this one). ` +
          `Issue one on the machine that holds the CA key: \`capmesh certs init --dir <its TLS dir>${extra}\` writes server.pem and server-key.pem there; copy them here as ${name}.pem and ${name}-key.pem.`)
      }
      const { issue } = await import('./issue.ts')
      const leaf = await issue(caPem, readFileSync(caKeyPath, 'utf8'), hosts, init.validityDays ?? 825)
      writeAtomic(keyPath, leaf.key, 0o600)
      writeAtomic(certPath, leaf.cert, 0o644)
    }
    return {
      cert: readFileSync(certPath, 'utf8'),
      key: readFileSync(keyPath, 'utf8'),
      ca: caPem,
      caPath,
      certPath,
      keyPath,
      createdCa
    }
  }, `cannot prepare TLS material in ${dir}`)
}

export interface IssueIdentityInit {
  /** TLS dir holding the CA (`ca.pem` and `ca-key.pem`); the certificate and its key are written there. */
  dir: string
  /** The identity's role. */
  role: (typeof IDENTITY_ROLES)[number]
  /** The identity's name, and the files' (`NAME.pem`, `NAME-key.pem`): a letter or digit, then letters, digits, `.`, `_`, `-`; at most 128. */
  name: string
  /** SPIFFE trust domain. @default 'capmesh.local' */
  trustDomain?: string
  /** Certificate lifetime in days (1 to 3650). @default 365 */
  validityDays?: number
}

export interface IssuedIdentity {
  /** The identity: `spiffe://<trust-domain>/<role>/<name>`. */
  id: string
  /** PEM certificate and its private key. */
  cert: string
  key: string
  certPath: string
  keyPath: string
  notAfter: Date
  /** True when an earlier certificate of the same identity was replaced. */
  replaced: boolean
}

/**
 * Issues a client certificate carrying an identity (URI SAN
 * `spiffe://<trust-domain>/<role>/<name>`, clientAuth only, CN=<name>),
 * signed by `dir`'s CA, into `NAME.pem` / `NAME-key.pem` (re-issuing
 * replaces an earlier certificate of the same identity; any other file of
 * that name is left alone and refused). Under the same lock as ensureTls.
 * ConfigError for a bad role, name, trust domain or lifetime; TlsError when
 * the dir has no CA or no CA key.
 */
export async function issueIdentity (init: IssueIdentityInit): Promise<IssuedIdentity> {
  const { dir, role, name } = init
  const trustDomain = init.trustDomain ?? DEFAULT_TRUST_DOMAIN
  const validityDays = init.validityDays ?? DEFAULT_IDENTITY_VALIDITY_DAYS
  if (!(IDENTITY_ROLES as readonly string[]).includes(role)) throw new ConfigError(`role "${String(role)}" is not one of ${IDENTITY_ROLES.join(', ')}`)
  if (typeof name !== 'string' || !ISSUED_IDENTITY_NAME.test(name)) throw new ConfigError(`name ${JSON.stringify(name)} must start with a letter or digit and hold only letters, digits, ".", "_", "-" (at most 128)`)
  if (!TRUST_DOMAIN.test(trustDomain)) throw new ConfigError(`trust domain "${trustDomain}" must be lower-case letters, digits, ".", "-", "_"`)
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > 3650) throw new ConfigError(`validity ${validityDays} days: expected an integer 1-3650`)
  const id = `spiffe://${trustDomain}/${role}/${name}`
  const caPath = join(dir, 'ca.pem')
  const caKeyPath = join(dir, 'ca-key.pem')
  if (!existsSync(caPath)) throw new TlsError(`no CA in ${dir} (ca.pem): create one with \`capmesh certs init --dir ${dir}\`, or issue identities where the CA is`)
  return await withDirLock(dir, async () => {
    if (!existsSync(caKeyPath)) throw new TlsError(`${dir} holds the CA certificate but not its key (ca-key.pem): issue identities on the machine that holds the CA key`)
    const caPem = readFileSync(caPath, 'utf8')
    const caKeyPem = readFileSync(caKeyPath, 'utf8')
    const ca = new NodeX509(caPem)
    if (!ca.checkPrivateKey(createPrivateKey(caKeyPem))) throw new TlsError(`${caKeyPath} is not the key of ${caPath}`)
    if (Date.parse(ca.validTo) <= Date.now()) throw new TlsError(`the CA ${caPath} expired on ${ca.validTo}`)
    const certPath = join(dir, `${name}.pem`)
    const keyPath = join(dir, `${name}-key.pem`)
    const replaced = existsSync(certPath)
    if (replaced) {
      const held = identityOfFile(certPath)
      if (held !== id) throw new TlsError(`${certPath} exists and ${held == null ? 'is not an identity certificate' : `holds ${held}`}; choose another name, or remove it`)
    }
    const { issueClient } = await import('./issue.ts')
    const leaf = await issueClient(caPem, caKeyPem, { uri: id, commonName: name, validityDays })
    writeAtomic(keyPath, leaf.key, 0o600)
    writeAtomic(certPath, leaf.cert, 0o644)
    return { id, cert: leaf.cert, key: leaf.key, certPath, keyPath, notAfter: leaf.notAfter, replaced }
  }, `cannot issue ${id} in ${dir}`)
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

/**
 * Why the server certificate in `certPath` cannot serve (missing, expiring
 * within a day, not covering a host, not signed by the CA, not matching its
 * key), or null when it can.
 */
function serverCertProblem (certPath: string, keyPath: string, caPem: string, hosts: string[]): string | null {
  if (!existsSync(certPath)) return 'is missing'
  if (!existsSync(keyPath)) return `has no key (${keyPath} is missing)`
  try {
    const cert = new NodeX509(readFileSync(certPath, 'utf8'))
    if (Date.parse(cert.validTo) < Date.now() + DAY) return `expires on ${cert.validTo}`
    const missing = uncovered(readFileSync(certPath, 'utf8'), hosts)
    if (missing.length > 0) return `does not cover ${missing.join(', ')}`
    if (!chainsTo(readFileSync(certPath, 'utf8'), caPem)) return 'is not signed by ca.pem'
    if (!cert.checkPrivateKey(createPrivateKey(readFileSync(keyPath, 'utf8')))) return `does not match its key ${keyPath}`
    return null
  } catch (err) {
    return `cannot be read (${(err as Error).message})`
  }
}

/**
 * True when the first certificate of `certPem` was signed by a certificate
 * of `caPem`, directly or through intermediates that follow it in
 * `certPem` (a chain file). Signatures only: clients check the rest.
 */
function chainsTo (certPem: string, caPem: string): boolean {
  const blocks = (pem: string): NodeX509[] => (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(b => new NodeX509(b))
  const anchors = blocks(caPem)
  const [leaf, ...intermediates] = blocks(certPem)
  const signs = (issuer: NodeX509, cert: NodeX509): boolean => cert.checkIssued(issuer) && cert.verify(issuer.publicKey)
  let cert: NodeX509 | undefined = leaf
  for (let depth = 0; depth <= intermediates.length; depth++) {
    const c: NodeX509 | undefined = cert
    if (c == null) return false
    if (anchors.some(a => signs(a, c))) return true
    cert = intermediates.find(i => i !== c && signs(i, c))
  }
  return false
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

/** The SPIFFE id in a certificate file's URI SAN, or null when it has none (or is not a certificate). */
function identityOfFile (path: string): string | null {
  try {
    const uris = (new NodeX509(readFileSync(path, 'utf8')).subjectAltName ?? '').split(', ').filter(s => s.startsWith('URI:spiffe://'))
    return uris.length === 1 ? uris[0].slice(4) : null
  } catch {
    return null
  }
}

/** Runs `fn` holding the TLS dir's lock; errors other than TlsError / ConfigError become a TlsError `<what>: ...`. */
async function withDirLock<T> (dir: string, fn: () => Promise<T>, what: string): Promise<T> {
  try {
    return await lockDir(dir, fn)
  } catch (err) {
    if (err instanceof TlsError || err instanceof ConfigError) throw err
    throw new TlsError(`${what}: ${(err as Error).message}`, { cause: err })
  }
}

const writeAtomic = writeFileAtomic
