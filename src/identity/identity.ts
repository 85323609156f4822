/**
 * Who a caller is: a role, a name and the worker ids it may act for, named
 * by a SPIFFE id, `spiffe://<trust-domain>/<role>/<name>`. A certificate's
 * URI SAN and a token's `sub` + `role` name the same identity: a worker
 * token for `w1` and a worker certificate for `w1` in one trust domain are
 * one caller (`spiffe://capmesh.local/worker/w1`), whichever it presents.
 */
import { IDENTITY_ROLES, MAX_ID_LENGTH, TRUST_DOMAIN } from '../constants.ts'

/** `'worker' | 'client' | 'operator' | 'metrics'`. */
export type Role = (typeof IDENTITY_ROLES)[number]

export interface Identity {
  /** The SPIFFE id `spiffe://<trust-domain>/<role>/<name>`, the same for a certificate and a token of one role and name. */
  readonly id: string
  readonly role: Role
  /** The last segment of the id: a certificate's name, a token's `sub`. */
  readonly name: string
  /**
   * Worker ids the identity may act for: `null` for any (an operator); a
   * worker certificate `[name]`; a worker token its `worker_ids` claim, or
   * `[sub]`; clients and metrics `[]`. Frozen.
   */
  readonly workerIds: string[] | null
  /** How the caller proved it. */
  readonly via: 'certificate' | 'token'
}

/** The role and name of a SPIFFE id. */
export interface SpiffeParts {
  role: Role
  name: string
}

/**
 * A name in an identity: printable ASCII without spaces, and without `/`
 * (exactly two path segments), `%` (no percent-decoding: one name, one
 * spelling), `?` and `#` (no query, no fragment); 1 to 256 characters. Every
 * such name is also a valid worker id.
 */
const NAME = new RegExp(`^[\\x21\\x22\\x24\\x26-\\x2e\\x30-\\x3e\\x40-\\x7e]{1,${MAX_ID_LENGTH}}$`)
/** A worker id, as the wire contract's `WorkerId` (printable ASCII without spaces, 1 to 256). */
const WORKER_ID = new RegExp(`^[\\x21-\\x7e]{1,${MAX_ID_LENGTH}}$`)
const ROLES: ReadonlySet<string> = new Set(IDENTITY_ROLES)

export function isRole (value: unknown): value is Role {
  return typeof value === 'string' && ROLES.has(value)
}

/** True when `name` may be the name of an identity (see NAME above). */
export function isIdentityName (name: unknown): name is string {
  return typeof name === 'string' && NAME.test(name)
}

/** True when `id` is a valid worker id (the wire contract's `WorkerId`). */
export function isWorkerId (id: unknown): id is string {
  return typeof id === 'string' && WORKER_ID.test(id)
}

/** True when `td` is a valid trust domain (lower-case letters, digits, `.`, `-`, `_`). */
export function isTrustDomain (td: unknown): td is string {
  return typeof td === 'string' && TRUST_DOMAIN.test(td)
}

/**
 * The role and name of `uri` when it is a capmesh SPIFFE id in exactly
 * `trustDomain`: `spiffe://<trustDomain>/<role>/<name>`, lower-case scheme,
 * no port, user, query, fragment or percent-encoding, exactly two path
 * segments. Null for anything else.
 */
export function parseSpiffeId (uri: string, trustDomain: string): SpiffeParts | null {
  const parts = parseSpiffeUri(uri)
  return parts != null && parts.trustDomain === trustDomain ? { role: parts.role, name: parts.name } : null
}

/** As parseSpiffeId, in whatever (valid) trust domain the id names. */
export function parseSpiffeUri (uri: string): (SpiffeParts & { trustDomain: string }) | null {
  if (typeof uri !== 'string' || !uri.startsWith('spiffe://')) return null
  const [trustDomain, role, name, ...more] = uri.slice('spiffe://'.length).split('/')
  if (more.length > 0 || name === undefined || !isTrustDomain(trustDomain) || !isRole(role) || !isIdentityName(name)) return null
  return { trustDomain, role, name }
}

/** `spiffe://<trustDomain>/<role>/<name>`; throws a TypeError on an invalid part. */
export function spiffeId (trustDomain: string, role: Role, name: string): string {
  if (!isTrustDomain(trustDomain)) throw new TypeError(`invalid trust domain "${trustDomain}"`)
  if (!isRole(role)) throw new TypeError(`invalid role "${String(role)}"`)
  if (!isIdentityName(name)) throw new TypeError(`invalid identity name ${JSON.stringify(name)}`)
  return `spiffe://${trustDomain}/${role}/${name}`
}

export interface CreateIdentityInit {
  trustDomain: string
  role: Role
  name: string
  via: 'certificate' | 'token'
  /** A worker's ids when not just its name (a token's `worker_ids`). Ignored for other roles. @default [name] */
  workerIds?: string[]
}

/**
 * A frozen Identity (its `workerIds` too: identities are cached and shared
 * between requests). Throws a TypeError on an invalid part.
 */
export function createIdentity (init: CreateIdentityInit): Identity {
  const id = spiffeId(init.trustDomain, init.role, init.name)
  let workerIds: string[] | null
  if (init.role === 'operator') workerIds = null
  else if (init.role === 'worker') workerIds = [...new Set(init.workerIds ?? [init.name])]
  else workerIds = []
  if (workerIds != null) {
    for (const w of workerIds) if (!isWorkerId(w)) throw new TypeError(`invalid worker id ${JSON.stringify(w)}`)
    Object.freeze(workerIds)
  }
  return Object.freeze({ id, role: init.role, name: init.name, workerIds, via: init.via })
}

/**
 * True when `identity` may act for `workerId` (register, heartbeat, drain,
 * deregister it): an operator for any, a worker for its `workerIds`,
 * clients and metrics for none.
 */
export function covers (identity: Identity, workerId: string): boolean {
  if (identity.role === 'operator') return true
  return identity.role === 'worker' && identity.workerIds != null && identity.workerIds.includes(workerId)
}
