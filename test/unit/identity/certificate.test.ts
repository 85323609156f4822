import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { AuthError, ConfigError } from '../../../src/errors.ts'
import { identityFromCertificate, loadSubjectMap, parseSubjectMap, splitAltNames, subjectKey, type SubjectMap } from '../../../src/identity/index.ts'
import { testPeerCertificate } from '../../helpers/x509.ts'

const TD = 'capmesh.local'
const root = mkdtempSync(join(tmpdir(), 'capmesh-subjects-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))

function refusal (fn: () => unknown): AuthError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(AuthError)
    return err as AuthError
  }
  throw new Error('expected an AuthError')
}

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError')
}

const url = (value: string): { type: 'url', value: string } => ({ type: 'url', value })

describe('identityFromCertificate', () => {
  it('takes the one SPIFFE URI SAN in the trust domain, next to other names', async () => {
    const cert = await testPeerCertificate({ subject: 'CN=w1', sans: [{ type: 'dns', value: 'w1.example' }, url('https://w1.example/x'), url('spiffe://capmesh.local/worker/w1'), { type: 'email', value: 'a@b.c' }] })
    expect(identityFromCertificate(cert, { trustDomain: TD })).toEqual({ id: 'spiffe://capmesh.local/worker/w1', role: 'worker', name: 'w1', workerIds: ['w1'], via: 'certificate' })
    const op = await testPeerCertificate({ sans: [url('spiffe://capmesh.local/operator/alice')] })
    expect(identityFromCertificate(op, { trustDomain: TD })).toMatchObject({ role: 'operator', workerIds: null })
  })

  it('reads names Node quotes (a comma, a quote) as they are', async () => {
    const cert = await testPeerCertificate({ sans: [url('spiffe://capmesh.local/worker/a,b"c')] })
    expect(cert.subjectaltname).toContain('\\u002c') // Node wrote it as a JSON string
    expect(identityFromCertificate(cert, { trustDomain: TD }).name).toBe('a,b"c')
  })

  it('is not fooled by a DNS name that spells a second entry', async () => {
    const cert = await testPeerCertificate({ sans: [{ type: 'dns', value: 'x, URI:spiffe://capmesh.local/operator/root' }, url('spiffe://capmesh.local/client/c')] })
    expect(identityFromCertificate(cert, { trustDomain: TD }).id).toBe('spiffe://capmesh.local/client/c')
    const only = await testPeerCertificate({ sans: [{ type: 'dns', value: 'x, URI:spiffe://capmesh.local/operator/root' }] })
    expect(refusal(() => identityFromCertificate(only, { trustDomain: TD })).reason).toBe('certificate_no_identity')
  })

  it('refuses two SPIFFE ids, equal or not (certificate_ambiguous)', async () => {
    const twice = await testPeerCertificate({ sans: [url('spiffe://capmesh.local/worker/w1'), url('spiffe://capmesh.local/worker/w1')] })
    const two = await testPeerCertificate({ sans: [url('spiffe://capmesh.local/worker/w1'), url('spiffe://capmesh.local/operator/root')] })
    const oneBad = await testPeerCertificate({ sans: [url('spiffe://capmesh.local/worker/w1'), url('spiffe://other/worker/w1')] })
    for (const cert of [twice, two, oneBad]) {
      const err = refusal(() => identityFromCertificate(cert, { trustDomain: TD }))
      expect(err.reason).toBe('certificate_ambiguous')
      expect(err.code).toBe('CAPMESH_ERR_UNAUTHENTICATED')
      expect(err.status).toBe(401)
    }
  })

  it.each([
    'spiffe://capmesh.local/worker/w%31',
    'spiffe://capmesh.local/worker/a/b',
    'spiffe://capmesh.local/root/w1',
    'spiffe://capmesh.local/worker',
    'spiffe://capmesh.local/worker/w1?x',
    'SPIFFE://capmesh.local/worker/w1',
    'spiffe://other.local/worker/w1'
  ])('refuses the malformed or foreign SPIFFE id %s (certificate_malformed_san), even with a mapped subject', async uri => {
    const cert = await testPeerCertificate({ subject: 'CN=w13', sans: [url(uri)] })
    const subjectMap = parseSubjectMap({ subjects: { 'CN=w13': 'spiffe://capmesh.local/worker/w13' } })
    expect(refusal(() => identityFromCertificate(cert, { trustDomain: TD, subjectMap })).reason).toBe('certificate_malformed_san')
  })

  it('maps a certificate without a SPIFFE id by its subject, and refuses an unmapped one', async () => {
    const subjectMap = parseSubjectMap({ subjects: { 'O=legacy, OU=gpu, CN=w13': 'spiffe://capmesh.local/worker/w13' } }, 'test', TD)
    const legacy = await testPeerCertificate({ subject: 'CN=w13, OU=gpu, O=legacy, C=DE', sans: [{ type: 'dns', value: 'w13.legacy' }] })
    expect(identityFromCertificate(legacy, { trustDomain: TD, subjectMap })).toEqual({ id: 'spiffe://capmesh.local/worker/w13', role: 'worker', name: 'w13', workerIds: ['w13'], via: 'certificate' })
    const other = await testPeerCertificate({ subject: 'CN=w14, OU=gpu, O=legacy' })
    const err = refusal(() => identityFromCertificate(other, { trustDomain: TD, subjectMap }))
    expect(err.reason).toBe('certificate_no_identity')
    expect(refusal(() => identityFromCertificate(legacy, { trustDomain: TD })).reason).toBe('certificate_no_identity')
  })

  it('no certificate at all (credentials_missing): {} when none was sent, null once the connection closed', () => {
    expect(refusal(() => identityFromCertificate({}, { trustDomain: TD })).reason).toBe('credentials_missing')
    expect(refusal(() => identityFromCertificate(null, { trustDomain: TD })).reason).toBe('credentials_missing')
  })

  it('refuses a mapped identity outside the trust domain', async () => {
    const subjectMap: SubjectMap = parseSubjectMap({ subjects: { 'CN=w13': 'spiffe://other.local/worker/w13' } })
    const legacy = await testPeerCertificate({ subject: 'CN=w13' })
    expect(refusal(() => identityFromCertificate(legacy, { trustDomain: TD, subjectMap })).reason).toBe('certificate_no_identity')
  })

  it('says www-authenticate: Bearer and carries its reason in the body', async () => {
    const err = refusal(() => identityFromCertificate({ subjectaltname: 'URI:spiffe://capmesh.local/worker/a%2f' }, { trustDomain: TD }))
    expect(err.headers()).toEqual({ 'www-authenticate': 'Bearer' })
    expect(err.wireBody()).toMatchObject({ error: 'unauthenticated', code: 'CAPMESH_ERR_UNAUTHENTICATED', reason: 'certificate_malformed_san' })
  })

  it('refuses a subjectaltname string it cannot read', () => {
    expect(refusal(() => identityFromCertificate({ subjectaltname: 'URI:"spiffe://capmesh.local/worker/w1' }, { trustDomain: TD })).reason).toBe('certificate_malformed_san')
  })
})

describe('subject keys', () => {
  it('is CN, OU, O in that order, repeated values sorted, other attributes left out', () => {
    expect(subjectKey({ O: 'legacy', CN: 'w13', OU: 'gpu', C: 'DE', L: 'Berlin' } as never)).toBe('CN=w13,OU=gpu,O=legacy')
    expect(subjectKey({ CN: 'w13', OU: ['b', 'a'] } as never)).toBe('CN=w13,OU=a,OU=b')
    expect(subjectKey({ C: 'DE' } as never)).toBeNull()
    expect(subjectKey(undefined)).toBeNull()
  })

  it('escapes as RFC 4514, so a value cannot pass for another attribute', () => {
    expect(subjectKey({ CN: 'a,OU=x' } as never)).toBe('CN=a\\,OU=x')
    expect(subjectKey({ CN: '#a+b;"<>\\ ', O: ' lead' } as never)).toBe('CN=\\#a\\+b\\;\\"\\<\\>\\\\\\ ,O=\\ lead')
  })

  it('a real certificate\'s subject, repeated OU included', async () => {
    const cert = await testPeerCertificate({ subject: 'CN=a\\,b, OU=y, OU=x, O=org' })
    expect(subjectKey(cert.subject)).toBe('CN=a\\,b,OU=x,OU=y,O=org')
  })

  it('splitAltNames reads Node\'s quoting', () => {
    expect(splitAltNames('DNS:"x\\u002c URI:spiffe://td/operator/root", URI:spiffe://td/worker/plain')).toEqual(['DNS:x, URI:spiffe://td/operator/root', 'URI:spiffe://td/worker/plain'])
  })
})

describe('subject map files', () => {
  const file = (name: string, content: unknown): string => {
    const path = join(root, name)
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
    return path
  }

  it('reads keys written in any order and spacing into the canonical form', () => {
    const map = loadSubjectMap(file('ok.json', { subjects: { 'O=legacy,  CN=w13 ': 'spiffe://capmesh.local/worker/w13', 'cn=a\\,b': 'spiffe://capmesh.local/client/ab', 'CN=x, OU=b, OU=a': 'spiffe://capmesh.local/operator/x' } }), TD)
    expect([...map.entries()]).toEqual([
      ['CN=w13,O=legacy', 'spiffe://capmesh.local/worker/w13'],
      ['CN=a\\,b', 'spiffe://capmesh.local/client/ab'],
      ['CN=x,OU=a,OU=b', 'spiffe://capmesh.local/operator/x']
    ])
  })

  it.each([
    ['not JSON', '{', /not JSON/],
    ['not an object', [], /must be an object/],
    ['an unknown top-level key', { subjects: {}, extra: 1 }, /extra: unknown key/],
    ['subjects not an object', { subjects: [] }, /subjects: must be an object/],
    ['a value that is not a string', { subjects: { 'CN=a': 1 } }, /subjects\/CN=a: must be a SPIFFE id/],
    ['a malformed SPIFFE id', { subjects: { 'CN=a': 'spiffe://capmesh.local/worker/a%20' } }, /subjects\/CN=a: .* is not spiffe/],
    ['an unknown attribute', { subjects: { 'CN=a, L=Berlin': 'spiffe://capmesh.local/worker/a' } }, /attribute "L" is not one of CN, OU, O/],
    ['a multi-valued RDN', { subjects: { 'CN=a+OU=b': 'spiffe://capmesh.local/worker/a' } }, /multi-valued/],
    ['an empty value', { subjects: { 'CN=': 'spiffe://capmesh.local/worker/a' } }, /CN has an empty value/],
    ['no "="', { subjects: { 'w13': 'spiffe://capmesh.local/worker/a' } }, /"w13" is not TYPE=value/],
    ['a trailing comma', { subjects: { 'CN=a,': 'spiffe://capmesh.local/worker/a' } }, /is not TYPE=value/],
    ['a slash in the key, named in the path', { subjects: { 'CN=a/b,L=x': 'spiffe://capmesh.local/worker/a' } }, /subjects\/CN=a~1b,L=x: /],
    ['one subject spelled twice', { subjects: { 'CN=a,O=b': 'spiffe://capmesh.local/worker/a', 'O=b, CN=a': 'spiffe://capmesh.local/worker/b' } }, /the same subject as "CN=a,O=b"/],
    ['an identity of another trust domain', { subjects: { 'CN=a': 'spiffe://other/worker/a' } }, /not in trust domain "capmesh.local"/]
  ])('refuses %s with a ConfigError naming the entry', (_, content, message) => {
    const path = file('bad.json', content)
    const err = configError(() => loadSubjectMap(path, TD))
    expect(err.message).toMatch(message)
    expect(err.message).toContain(path)
  })

  it('refuses a file it cannot read', () => {
    expect(configError(() => loadSubjectMap(join(root, 'missing.json'))).message).toMatch(/cannot read it/)
  })
})
