import { X509Certificate } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createServer, type PeerCertificate } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, TlsError } from '../../../src/errors.ts'
import { identityFromCertificate } from '../../../src/identity/index.ts'
import { ensureTls, issueIdentity, type TlsMaterial } from '../../../src/tls/index.ts'
import { chainedServerCertificate } from '../../helpers/x509.ts'

const DAY = 86_400_000
let root: string
let dir: string
let tls: TlsMaterial

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'capmesh-identity-certs-'))
  dir = join(root, 'tls')
  tls = await ensureTls({ dir })
})
afterAll(() => rmSync(root, { recursive: true, force: true }))

async function rejection (p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection')
}

/** A TLS server asking for client certificates from `ca`; resolves with what it saw of the first connection. */
interface Seen { authorized: boolean, error: string | null, peer: PeerCertificate }

async function mtlsServer (server: { cert: string, key: string }, ca: string): Promise<{ port: number, seen: Promise<Seen>, close: () => void }> {
  let resolve!: (v: Seen) => void
  const seen = new Promise<Seen>(r => { resolve = r })
  const s = createServer({ cert: server.cert, key: server.key, ca, requestCert: true, rejectUnauthorized: false }, socket => {
    // Read while the connection is open: getPeerCertificate() is null once it has closed.
    resolve({ authorized: socket.authorized, error: socket.authorizationError == null ? null : String(socket.authorizationError), peer: socket.getPeerCertificate() })
    socket.end('ok')
  })
  await new Promise<void>(r => s.listen(0, '127.0.0.1', r))
  return { port: (s.address() as { port: number }).port, seen, close: () => s.close() }
}

async function handshake (port: number, opts: { cert?: string, key?: string, ca: string }): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const c = connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => { c.on('data', () => {}); c.on('end', () => resolve()); c.end() })
    c.on('error', reject)
  })
}

describe('issueIdentity', () => {
  it('writes NAME.pem and NAME-key.pem: a client certificate with the SPIFFE id, signed by the CA', async () => {
    const issued = await issueIdentity({ dir, role: 'worker', name: 'w1' })
    expect(issued).toMatchObject({ id: 'spiffe://capmesh.local/worker/w1', certPath: join(dir, 'w1.pem'), keyPath: join(dir, 'w1-key.pem'), replaced: false })
    expect(readFileSync(issued.certPath, 'utf8')).toBe(issued.cert)
    expect(statSync(issued.keyPath).mode & 0o777).toBe(0o600)
    const cert = new X509Certificate(issued.cert)
    const ca = new X509Certificate(tls.ca)
    expect(cert.subjectAltName).toBe('URI:spiffe://capmesh.local/worker/w1')
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']) // extended key usage: clientAuth only
    expect(cert.subject).toBe('CN=w1')
    expect(cert.issuer).toBe(ca.subject)
    expect(cert.checkIssued(ca)).toBe(true)
    expect(cert.verify(ca.publicKey)).toBe(true)
    expect(cert.ca).toBe(false)
    expect(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(issued.key))).toBe(true)
    const notAfter = Date.parse(cert.validTo)
    expect(Math.abs(notAfter - (Date.now() + 365 * DAY))).toBeLessThan(60_000)
    expect(Math.abs(notAfter - issued.notAfter.getTime())).toBeLessThan(1000)
    expect(Date.parse(cert.validFrom)).toBeLessThanOrEqual(Date.now())
  })

  it('takes the trust domain and lifetime, and re-issues an identity in place', async () => {
    const first = await issueIdentity({ dir, role: 'client', name: 'billing', trustDomain: 'example.org', validityDays: 7 })
    const cert = new X509Certificate(first.cert)
    expect(cert.subjectAltName).toBe('URI:spiffe://example.org/client/billing')
    expect(Math.abs(Date.parse(cert.validTo) - (Date.now() + 7 * DAY))).toBeLessThan(60_000)
    const again = await issueIdentity({ dir, role: 'client', name: 'billing', trustDomain: 'example.org', validityDays: 7 })
    expect(again.replaced).toBe(true)
    expect(again.cert).not.toBe(first.cert)
  })

  it('works for mutual TLS: a server trusting the CA verifies it, and the identity is read from it', async () => {
    const issued = await issueIdentity({ dir, role: 'operator', name: 'alice' })
    const server = await mtlsServer(tls, tls.ca)
    try {
      await handshake(server.port, { cert: issued.cert, key: issued.key, ca: tls.ca })
      const { authorized, error, peer } = await server.seen
      expect(error).toBeNull()
      expect(authorized).toBe(true)
      expect(identityFromCertificate(peer, { trustDomain: 'capmesh.local' })).toEqual({
        id: 'spiffe://capmesh.local/operator/alice', role: 'operator', name: 'alice', workerIds: null, via: 'certificate'
      })
    } finally {
      server.close()
    }
  })

  it('a certificate from another CA is not verified by that server', async () => {
    const otherDir = join(root, 'other-ca')
    await ensureTls({ dir: otherDir })
    const stranger = await issueIdentity({ dir: otherDir, role: 'operator', name: 'mallory' })
    const server = await mtlsServer(tls, tls.ca)
    try {
      await handshake(server.port, { cert: stranger.cert, key: stranger.key, ca: tls.ca }).catch(() => {})
      const { authorized, error } = await server.seen
      expect(authorized).toBe(false)
      expect(error).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/)
    } finally {
      server.close()
    }
  })

  it('cannot serve HTTPS: a client refuses it as a server certificate (clientAuth only)', async () => {
    const issued = await issueIdentity({ dir, role: 'worker', name: 'localhost' })
    const s = createServer({ cert: issued.cert, key: issued.key }, socket => socket.end())
    await new Promise<void>(r => s.listen(0, '127.0.0.1', r))
    try {
      const err = await rejection(handshake((s.address() as { port: number }).port, { ca: tls.ca }))
      expect((err as NodeJS.ErrnoException).code).toMatch(/PURPOSE/)
    } finally {
      s.close()
    }
  })

  it.each<[string, Parameters<typeof issueIdentity>[0], RegExp]>([
    ['an unknown role', { dir: '', role: 'admin' as 'worker', name: 'x' }, /role "admin"/],
    ['a name with a slash', { dir: '', role: 'worker', name: 'a/b' }, /name "a\/b"/],
    ['a name starting with a dot', { dir: '', role: 'worker', name: '.hidden' }, /name/],
    ['an empty name', { dir: '', role: 'worker', name: '' }, /name/],
    ['a name of 129 characters', { dir: '', role: 'worker', name: 'x'.repeat(129) }, /at most 128/],
    ['a bad trust domain', { dir: '', role: 'worker', name: 'x', trustDomain: 'Capmesh' }, /trust domain/],
    ['0 days', { dir: '', role: 'worker', name: 'x', validityDays: 0 }, /validity/],
    ['a fraction of a day', { dir: '', role: 'worker', name: 'x', validityDays: 1.5 }, /validity/]
  ])('refuses %s (ConfigError)', async (_, init, message) => {
    const err = await rejection(issueIdentity({ ...init, dir }))
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message).toMatch(message)
  })

  it('never overwrites a file that is not the same identity\'s certificate', async () => {
    const caBefore = readFileSync(join(dir, 'ca.pem'), 'utf8')
    const serverBefore = readFileSync(join(dir, 'server.pem'), 'utf8')
    for (const name of ['ca', 'server']) {
      const err = await rejection(issueIdentity({ dir, role: 'client', name }))
      expect(err).toBeInstanceOf(TlsError)
      expect(err.message).toMatch(/is not an identity certificate/)
    }
    await issueIdentity({ dir, role: 'worker', name: 'w2' })
    const err = await rejection(issueIdentity({ dir, role: 'client', name: 'w2' }))
    expect(err.message).toMatch(/holds spiffe:\/\/capmesh.local\/worker\/w2/)
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).toBe(caBefore)
    expect(readFileSync(join(dir, 'server.pem'), 'utf8')).toBe(serverBefore)
    expect(new X509Certificate(readFileSync(join(dir, 'w2.pem'))).subjectAltName).toBe('URI:spiffe://capmesh.local/worker/w2')
  })

  it('refuses a dir without a CA, or without the CA key, or with a CA key that is not the CA\'s (TlsError)', async () => {
    const empty = join(root, 'empty')
    mkdirSync(empty)
    const noCa = await rejection(issueIdentity({ dir: empty, role: 'worker', name: 'w1' }))
    expect(noCa).toBeInstanceOf(TlsError)
    expect(noCa.message).toMatch(/no CA in .*capmesh certs init/)
    expect(existsSync(join(empty, 'ca.pem'))).toBe(false)

    const caOnly = join(root, 'ca-only')
    mkdirSync(caOnly)
    copyFileSync(join(dir, 'ca.pem'), join(caOnly, 'ca.pem'))
    const noKey = await rejection(issueIdentity({ dir: caOnly, role: 'worker', name: 'w1' }))
    expect(noKey).toBeInstanceOf(TlsError)
    expect(noKey.message).toMatch(/not its key \(ca-key\.pem\)/)
    expect(existsSync(join(caOnly, 'w1.pem'))).toBe(false)

    const mismatched = join(root, 'mismatched')
    mkdirSync(mismatched)
    copyFileSync(join(dir, 'ca.pem'), join(mismatched, 'ca.pem'))
    copyFileSync(join(root, 'other-ca', 'ca-key.pem'), join(mismatched, 'ca-key.pem'))
    const wrongKey = await rejection(issueIdentity({ dir: mismatched, role: 'worker', name: 'w1' }))
    expect(wrongKey).toBeInstanceOf(TlsError)
    expect(wrongKey.message).toMatch(/is not the key of/)
  })

  it('shares ensureTls\'s lock: identities and server certificates made at once on a fresh dir use one CA', async () => {
    const fresh = join(root, 'fresh')
    await ensureTls({ dir: fresh }) // the CA must exist before identities can be issued
    const [a, b, s1, s2] = await Promise.all([
      issueIdentity({ dir: fresh, role: 'worker', name: 'a' }),
      issueIdentity({ dir: fresh, role: 'worker', name: 'b' }),
      ensureTls({ dir: fresh, name: 's1' }),
      ensureTls({ dir: fresh, name: 's2' })
    ])
    const ca = new X509Certificate(readFileSync(join(fresh, 'ca.pem')))
    for (const pem of [a.cert, b.cert, s1.cert, s2.cert]) expect(new X509Certificate(pem).verify(ca.publicKey)).toBe(true)
    expect(s1.createdCa || s2.createdCa).toBe(false)
  })
})

describe('ensureTls without the CA key', () => {
  /** A dir holding copies of `files` from the main TLS dir. */
  function deployed (name: string, files: string[]): string {
    const d = join(root, name)
    mkdirSync(d)
    for (const f of files) copyFileSync(join(dir, f), join(d, f))
    return d
  }

  it('uses a usable server certificate as it is, and makes nothing', async () => {
    const d = deployed('deployed-ok', ['ca.pem', 'server.pem', 'server-key.pem'])
    const got = await ensureTls({ dir: d })
    expect(got.createdCa).toBe(false)
    expect(got.cert).toBe(tls.cert)
    expect(got.ca).toBe(tls.ca)
    expect(existsSync(join(d, 'ca-key.pem'))).toBe(false)
  })

  it('accepts a server certificate signed through an intermediate CA (a chain file), and serves with it', async () => {
    const d = deployed('deployed-chain', [])
    const { ca, chain, key } = await chainedServerCertificate()
    writeFileSync(join(d, 'ca.pem'), ca)
    writeFileSync(join(d, 'server.pem'), chain)
    writeFileSync(join(d, 'server-key.pem'), key)
    const got = await ensureTls({ dir: d })
    expect(got.cert).toBe(chain)
    const s = createServer({ cert: got.cert, key: got.key }, socket => socket.end())
    await new Promise<void>(r => s.listen(0, '127.0.0.1', r))
    try {
      await handshake((s.address() as { port: number }).port, { ca })
    } finally {
      s.close()
    }
    // Without the intermediate in the file, the leaf does not chain to ca.pem.
    writeFileSync(join(d, 'server.pem'), chain.slice(0, chain.indexOf('-----END CERTIFICATE-----') + 26))
    expect((await rejection(ensureTls({ dir: d }))).message).toMatch(/is not signed by ca\.pem/)
  })

  it('fails, saying where to issue one, when the server certificate is missing, and never makes a second CA', async () => {
    const d = deployed('deployed-no-cert', ['ca.pem'])
    const err = await rejection(ensureTls({ dir: d, hosts: ['10.1.2.3'] }))
    expect(err).toBeInstanceOf(TlsError)
    expect(err.message).toMatch(/server\.pem is missing/)
    expect(err.message).toMatch(/without the CA key \(ca-key\.pem\)/)
    expect(err.message).toContain('capmesh certs init --dir <its TLS dir> --host 10.1.2.3')
    expect(readFileSync(join(d, 'ca.pem'), 'utf8')).toBe(tls.ca)
    expect(existsSync(join(d, 'ca-key.pem'))).toBe(false)
    expect(existsSync(join(d, 'server.pem'))).toBe(false)
  })

  it('fails when the certificate does not cover a host, or was signed by another CA, or does not match its key', async () => {
    const uncovered = deployed('deployed-uncovered', ['ca.pem', 'server.pem', 'server-key.pem'])
    expect((await rejection(ensureTls({ dir: uncovered, hosts: ['10.1.2.3'] }))).message).toMatch(/does not cover 10\.1\.2\.3/)
    expect(readFileSync(join(uncovered, 'server.pem'), 'utf8')).toBe(tls.cert)

    const foreign = deployed('deployed-foreign', ['ca.pem'])
    copyFileSync(join(root, 'other-ca', 'server.pem'), join(foreign, 'server.pem'))
    copyFileSync(join(root, 'other-ca', 'server-key.pem'), join(foreign, 'server-key.pem'))
    expect((await rejection(ensureTls({ dir: foreign }))).message).toMatch(/is not signed by ca\.pem/)

    const wrongKey = deployed('deployed-wrong-key', ['ca.pem', 'server.pem'])
    copyFileSync(join(root, 'other-ca', 'server-key.pem'), join(wrongKey, 'server-key.pem'))
    expect((await rejection(ensureTls({ dir: wrongKey }))).message).toMatch(/does not match its key/)
  })

  it('refuses a CA key without its certificate rather than replacing the key', async () => {
    const d = deployed('key-only', ['ca-key.pem'])
    const err = await rejection(ensureTls({ dir: d }))
    expect(err).toBeInstanceOf(TlsError)
    expect(err.message).toMatch(/no CA certificate \(ca\.pem\)/)
    expect(readFileSync(join(d, 'ca-key.pem'), 'utf8')).toBe(readFileSync(join(dir, 'ca-key.pem'), 'utf8'))
    expect(existsSync(join(d, 'ca.pem'))).toBe(false)
  })

  it('with the CA key, replaces a server certificate another CA signed', async () => {
    const d = deployed('replace-foreign', ['ca.pem', 'ca-key.pem'])
    copyFileSync(join(root, 'other-ca', 'server.pem'), join(d, 'server.pem'))
    copyFileSync(join(root, 'other-ca', 'server-key.pem'), join(d, 'server-key.pem'))
    const got = await ensureTls({ dir: d })
    expect(new X509Certificate(got.cert).verify(new X509Certificate(tls.ca).publicKey)).toBe(true)
    expect(got.ca).toBe(tls.ca)
  })

  it('a worker certificate name (ensureTls name) gets the same treatment', async () => {
    const d = deployed('deployed-worker', ['ca.pem'])
    const err = await rejection(ensureTls({ dir: d, name: 'worker-w1' }))
    expect(err.message).toMatch(/worker-w1\.pem is missing.*copy them here as worker-w1\.pem and worker-w1-key\.pem/)
  })
})
