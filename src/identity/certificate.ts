/**
 * The identity of a client certificate Node's TLS has already verified
 * against the trusted CAs (`socket.authorized`): its one SPIFFE URI SAN, or,
 * for certificates without one (a legacy platform's workers), its subject
 * looked up in a subject map.
 *
 * Subjects are compared in one canonical string form: the certificate's
 * `CN`, `OU` and `O` attributes, in that order, each value as its own
 * `TYPE=value`, several values of one type sorted (by UTF-16 code units),
 * joined by `,` without spaces; values escaped as RFC 4514 says (`\` before
 * `, + " \ < > ;`, a leading `#` or space and a trailing space). Other
 * attributes (C, ST, L, emailAddress, ...) are not part of it. So a
 * certificate with subject `O=legacy, OU=gpu, CN=w13` has the key
 * `CN=w13,OU=gpu,O=legacy`. Keys in a subject map file may be written in
 * any order and with spaces after the commas; they are read into the same
 * form.
 */
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls'
import { AuthError } from '../errors.ts'
import { createIdentity, parseSpiffeId, parseSpiffeUri, type Identity } from './identity.ts'
import { configFailure, isPlainObject, pointer, readJsonFile } from './json-file.ts'

/** Canonical subject (see above) → SPIFFE id. Build it with loadSubjectMap / parseSubjectMap. */
export type SubjectMap = ReadonlyMap<string, string>

/** What identityFromCertificate reads of a certificate (a PeerCertificate has both). */
export type CertificateLike = Partial<Pick<PeerCertificate, 'subject' | 'subjectaltname'>>

export interface CertificateIdentityInit {
  /** Only SPIFFE ids in this trust domain are identities. */
  trustDomain: string
  /** Subjects of certificates without a SPIFFE id. @default none */
  subjectMap?: SubjectMap
}

/** The subject attributes that make up a subject key, in their order. */
const SUBJECT_ATTRS = ['CN', 'OU', 'O'] as const
type SubjectAttr = (typeof SUBJECT_ATTRS)[number]

/**
 * The identity a verified client certificate carries. Exactly one SPIFFE
 * URI SAN in the trust domain is the identity; two or more SPIFFE URIs
 * (equal or not) are refused, as is a malformed one or one of another
 * trust domain; a certificate without any is looked up by subject.
 * Throws AuthError: `certificate_ambiguous`, `certificate_malformed_san`,
 * `certificate_no_identity`; `credentials_missing` for no certificate
 * (`getPeerCertificate()` gives `{}` when the client sent none, null once
 * the connection has closed).
 */
export function identityFromCertificate (cert: PeerCertificate | DetailedPeerCertificate | CertificateLike | null | undefined, init: CertificateIdentityInit): Identity {
  if (cert == null || Object.keys(cert).length === 0) throw new AuthError('credentials_missing', 'no client certificate')
  let sans: string[]
  try {
    sans = typeof cert.subjectaltname === 'string' && cert.subjectaltname !== '' ? splitAltNames(cert.subjectaltname) : []
  } catch {
    throw new AuthError('certificate_malformed_san', 'the certificate\'s subject alternative names cannot be read')
  }
  const spiffe = sans.filter(s => s.startsWith('URI:') && /^spiffe:/i.test(s.slice(4))).map(s => s.slice(4))
  if (spiffe.length > 1) throw new AuthError('certificate_ambiguous', `the certificate names ${spiffe.length} SPIFFE ids; an identity certificate has exactly one`)
  if (spiffe.length === 1) {
    const parts = parseSpiffeId(spiffe[0], init.trustDomain)
    if (parts == null) {
      const other = parseSpiffeUri(spiffe[0])
      throw new AuthError('certificate_malformed_san', other != null
        ? `the certificate's SPIFFE id is in trust domain "${other.trustDomain}", not "${init.trustDomain}"`
        : `the certificate's SPIFFE id ${JSON.stringify(spiffe[0].slice(0, 300))} is not spiffe://${init.trustDomain}/<worker|client|operator|metrics>/<name>`)
    }
    return createIdentity({ trustDomain: init.trustDomain, ...parts, via: 'certificate' })
  }
  const key = subjectKey(cert.subject)
  const mapped = key != null ? init.subjectMap?.get(key) : undefined
  if (mapped === undefined) {
    throw new AuthError('certificate_no_identity', key == null
      ? 'the certificate has no SPIFFE id and no subject'
      : `the certificate has no SPIFFE id and its subject ${JSON.stringify(key.slice(0, 300))} is not in the subject map`)
  }
  const parts = parseSpiffeId(mapped, init.trustDomain)
  if (parts == null) throw new AuthError('certificate_no_identity', `the subject map gives ${mapped}, which is not an identity in trust domain "${init.trustDomain}"`)
  return createIdentity({ trustDomain: init.trustDomain, ...parts, via: 'certificate' })
}

/**
 * The canonical key of a certificate subject (Node's `cert.subject`,
 * values a string or, for a repeated attribute, an array), or null when it
 * has none of CN, OU, O.
 */
export function subjectKey (subject: PeerCertificate['subject'] | Record<string, string | string[] | undefined> | undefined | null): string | null {
  if (subject == null) return null
  const values: Partial<Record<SubjectAttr, string[]>> = {}
  const record = subject as unknown as Record<string, unknown>
  for (const attr of SUBJECT_ATTRS) {
    const v = Object.hasOwn(record, attr) ? record[attr] : undefined
    const list = typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []
    if (list.length > 0) values[attr] = list
  }
  return renderSubject(values)
}

/** Reads a subject map file (`{"subjects": {"<subject>": "spiffe://td/worker/name"}}`); ConfigError naming the bad entry. */
export function loadSubjectMap (file: string, trustDomain?: string): SubjectMap {
  return parseSubjectMap(readJsonFile(file, 'subject map'), file, trustDomain)
}

/**
 * A subject map from its parsed JSON. `source` names it in errors. With
 * `trustDomain`, every identity must be in it.
 */
export function parseSubjectMap (json: unknown, source = 'subject map', trustDomain?: string): SubjectMap {
  const fail: (path: string, message: string) => never = configFailure('subject map', source)
  if (!isPlainObject(json)) fail('', 'must be an object {"subjects": {...}}')
  for (const k of Object.keys(json)) if (k !== 'subjects') fail(pointer([k]), 'unknown key (only "subjects")')
  const subjects = json.subjects
  if (!isPlainObject(subjects)) fail('subjects', 'must be an object of "<subject>": "spiffe://<trust-domain>/<role>/<name>"')
  const out = new Map<string, string>()
  const spelledAs = new Map<string, string>()
  for (const [raw, id] of Object.entries(subjects)) {
    const path = pointer(['subjects', raw])
    const parsed = parseSubject(raw)
    if (typeof parsed === 'string') fail(path, parsed)
    const key = renderSubject(parsed)
    if (key == null) fail(path, 'empty subject')
    const before = spelledAs.get(key)
    if (before !== undefined) fail(path, `the same subject as ${JSON.stringify(before)} (both are ${key})`)
    spelledAs.set(key, raw)
    if (typeof id !== 'string') fail(path, 'must be a SPIFFE id string')
    const parts = parseSpiffeUri(id)
    if (parts == null) fail(path, `${JSON.stringify(id)} is not spiffe://<trust-domain>/<worker|client|operator|metrics>/<name>`)
    if (trustDomain != null && parts.trustDomain !== trustDomain) fail(path, `${id} is not in trust domain "${trustDomain}"`)
    out.set(key, id)
  }
  return out
}

function renderSubject (values: Partial<Record<SubjectAttr, string[]>>): string | null {
  const out: string[] = []
  for (const attr of SUBJECT_ATTRS) {
    for (const v of [...(values[attr] ?? [])].sort()) out.push(`${attr}=${escapeValue(v)}`)
  }
  return out.length > 0 ? out.join(',') : null
}

function escapeValue (v: string): string {
  let out = ''
  for (let j = 0; j < v.length; j++) {
    const c = v[j]
    const edge = (j === 0 && (c === '#' || c === ' ')) || (j === v.length - 1 && c === ' ')
    out += edge || '\\,+"<>;'.includes(c) ? `\\${c}` : c
  }
  return out
}

/**
 * `CN=w13, OU=gpu, O=legacy` (any order) → its attribute values, or a
 * message saying what is wrong. `\` escapes the next character; unescaped
 * spaces around a value are dropped.
 */
function parseSubject (text: string): Partial<Record<SubjectAttr, string[]>> | string {
  const values: Partial<Record<SubjectAttr, string[]>> = {}
  let i = 0
  if (text.trim() === '') return 'empty subject'
  while (i <= text.length) {
    const eq = text.indexOf('=', i)
    if (eq < 0) return `"${text.slice(i).trim()}" is not TYPE=value`
    const type = text.slice(i, eq).trim().toUpperCase()
    if (!(SUBJECT_ATTRS as readonly string[]).includes(type)) return `attribute "${text.slice(i, eq).trim()}" is not one of ${SUBJECT_ATTRS.join(', ')} (the only ones a subject key holds)`
    const chars: Array<{ c: string, escaped: boolean }> = []
    i = eq + 1
    for (; i < text.length; i++) {
      const c = text[i]
      if (c === '\\') {
        if (i + 1 >= text.length) return 'a trailing "\\" escapes nothing'
        chars.push({ c: text[++i], escaped: true })
      } else if (c === ',') {
        break
      } else if (c === '+') {
        return 'multi-valued RDNs ("+") are not supported; escape a literal "+" as "\\+"'
      } else {
        chars.push({ c, escaped: false })
      }
    }
    while (chars.length > 0 && !chars[0].escaped && chars[0].c === ' ') chars.shift()
    while (chars.length > 0 && !chars[chars.length - 1].escaped && chars[chars.length - 1].c === ' ') chars.pop()
    if (chars.length === 0) return `${type} has an empty value`
    ;(values[type as SubjectAttr] ??= []).push(chars.map(x => x.c).join(''))
    i++ // past the comma (or the end)
  }
  return values
}

/**
 * Node's `subjectaltname` string (`DNS:a, URI:spiffe://...`) split into its
 * entries. Node writes a value holding a separator, a quote or a control
 * character as a JSON string (`URI:"spiffe://td/worker/a\u002cb"`), so that
 * a DNS name `x, URI:spiffe://td/operator/root` cannot pass for a second
 * entry; this reads them back the way node:tls's checkServerIdentity does.
 */
export function splitAltNames (altNames: string): string[] {
  const out: string[] = []
  let token = ''
  let offset = 0
  while (offset !== altNames.length) {
    const sep = altNames.indexOf(', ', offset)
    const quote = altNames.indexOf('"', offset)
    if (quote !== -1 && (sep === -1 || quote < sep)) {
      token += altNames.slice(offset, quote)
      const m = JSON_STRING.exec(altNames.slice(quote))
      if (m == null) throw new SyntaxError('bad quoted subject alternative name')
      token += JSON.parse(m[0]) as string
      offset = quote + m[0].length
    } else if (sep !== -1) {
      token += altNames.slice(offset, sep)
      out.push(token)
      token = ''
      offset = sep + 2
    } else {
      token += altNames.slice(offset)
      offset = altNames.length
    }
  }
  out.push(token)
  return out
}

// eslint-disable-next-line no-control-regex
const JSON_STRING = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/
