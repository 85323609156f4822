/**
 * Who may route to what. Without a policy file every client and operator
 * may route to every capability. With one (`--policy FILE`), a client may
 * route to a capability only when some rule names both; operators always
 * may; workers and metrics never (that is the API's role table, repeated
 * here so that the policy alone never says yes to them). Denied identities
 * (the file's `deny`, `--deny-identity`) may do nothing at all: the API asks
 * `denies()` of every request, and `allowsRoute()` says no to them too.
 *
 * ```json
 * {
 *   "rules": [
 *     { "identities": ["spiffe://capmesh.local/client/billing", "spiffe://capmesh.local/client/team-*"],
 *       "capabilities": ["invoice-*", "echo"] }
 *   ],
 *   "deny": ["spiffe://capmesh.local/worker/w13"]
 * }
 * ```
 *
 * Identity patterns are an exact SPIFFE id, or a prefix ending with `*`
 * (`spiffe://capmesh.local/client/team-*`); `*` anywhere else is refused.
 * Capability patterns are globs over the capability name: `*` any run of
 * characters (none included), `?` exactly one; everything else literal and
 * case-sensitive. Globs are compiled once when the file is read (literals
 * into a Set, the others split at their stars: see globMatcher), and
 * decisions are remembered per (identity, capability), so /route mostly
 * pays one map lookup.
 */
import { DEFAULT_POLICY_CACHE_SIZE } from '../constants.ts'
import { ConfigError } from '../errors.ts'
import { BoundedMap } from '../utils/bounded-map.ts'
import { parseSpiffeUri, type Identity } from './identity.ts'
import { configFailure, isPlainObject, pointer, readJsonFile } from './json-file.ts'

export interface RoutePolicy {
  /** True when `identity` may route to `capability` (a capability name, as in the route request). */
  allowsRoute: (identity: Identity, capability: string) => boolean
  /** True when the identity (its SPIFFE id) is denied everything. */
  denies: (identityId: string) => boolean
}

export interface RoutePolicyInit {
  /** Decisions remembered per (identity, capability); 0 remembers none. @default 10000 */
  cacheSize?: number
}

/** The longest pattern accepted (an identity is at most ~300 characters, a capability name less). */
const MAX_PATTERN = 1024

/** The policy without a file: every client and operator may route anywhere; nobody is denied. */
export function defaultRoutePolicy (): RoutePolicy {
  return {
    allowsRoute: (identity) => identity.role === 'client' || identity.role === 'operator',
    denies: () => false
  }
}

/** Reads and checks a policy file; ConfigError naming the file and the path of the bad entry (`rules/1/capabilities/0`). */
export function loadPolicy (file: string, init: RoutePolicyInit = {}): RoutePolicy {
  return parsePolicy(readJsonFile(file, 'policy'), file, init)
}

/** A policy from its parsed JSON; `source` names it in errors. */
export function parsePolicy (json: unknown, source = 'policy', init: RoutePolicyInit = {}): RoutePolicy {
  const fail: (path: string, message: string) => never = configFailure('policy', source)
  if (!isPlainObject(json)) fail('', 'must be an object {"rules": [...], "deny": [...]}')
  for (const k of Object.keys(json)) if (k !== 'rules' && k !== 'deny') fail(pointer([k]), 'unknown key (only "rules" and "deny")')
  if (!Array.isArray(json.rules)) fail('rules', 'must be an array of {"identities": [...], "capabilities": [...]} (an empty array lets no client route)')
  const rules = json.rules.map((rule: unknown, i: number): CompiledRule => {
    if (!isPlainObject(rule)) fail(pointer(['rules', i]), 'must be an object {"identities": [...], "capabilities": [...]}')
    for (const k of Object.keys(rule)) if (k !== 'identities' && k !== 'capabilities') fail(pointer(['rules', i, k]), 'unknown key (only "identities" and "capabilities")')
    const identities = patternList(rule.identities, ['rules', i, 'identities'], fail)
    const capabilities = patternList(rule.capabilities, ['rules', i, 'capabilities'], fail)
    identities.forEach((p, j) => { const m = checkIdentityPattern(p); if (m != null) fail(pointer(['rules', i, 'identities', j]), m) })
    capabilities.forEach((p, j) => { if (/[\x00-\x1f\x7f]/.test(p)) fail(pointer(['rules', i, 'capabilities', j]), 'must not hold control characters') }) // eslint-disable-line no-control-regex
    return { identities: identityMatcher(identities), capabilities: globMatcher(capabilities) }
  })
  let deny: (id: string) => boolean = () => false
  if (json.deny !== undefined) {
    const patterns = patternList(json.deny, ['deny'], fail, true)
    patterns.forEach((p, j) => { const m = checkIdentityPattern(p); if (m != null) fail(pointer(['deny', j]), m) })
    deny = identityMatcher(patterns)
  }
  return compiledPolicy(rules, deny, init.cacheSize ?? DEFAULT_POLICY_CACHE_SIZE)
}

/**
 * `policy` with more denied identities (`--deny-identity` flags, exact ids
 * or `*` prefixes), on top of its own. ConfigError for a bad pattern.
 */
export function policyWithDenials (policy: RoutePolicy, deny: string[]): RoutePolicy {
  deny.forEach((p, i) => {
    const m = typeof p === 'string' ? checkIdentityPattern(p) : 'must be a string'
    if (m != null) throw new ConfigError(`--deny-identity ${JSON.stringify(p)}: ${m}`, { flag: 'deny-identity', index: i })
  })
  if (deny.length === 0) return policy
  const denied = identityMatcher(deny)
  const denies = (id: string): boolean => denied(id) || policy.denies(id)
  return {
    allowsRoute: (identity, capability) => !denied(identity.id) && policy.allowsRoute(identity, capability),
    denies
  }
}

interface CompiledRule {
  identities: (id: string) => boolean
  capabilities: (name: string) => boolean
}

function compiledPolicy (rules: CompiledRule[], denies: (id: string) => boolean, cacheSize: number): RoutePolicy {
  const decisions = new BoundedMap<string, boolean>(cacheSize)
  return {
    allowsRoute (identity, capability) {
      if (identity.role !== 'client' && identity.role !== 'operator') return false
      // An id has no control characters, so "\n" cannot make two pairs one key.
      const key = `${identity.id}\n${capability}`
      const known = decisions.get(key)
      if (known !== undefined) return known
      const allowed = !denies(identity.id) && (identity.role === 'operator' || rules.some(r => r.identities(identity.id) && r.capabilities(capability)))
      decisions.set(key, allowed)
      return allowed
    },
    denies
  }
}

function patternList (value: unknown, path: Array<string | number>, fail: (path: string, message: string) => never, mayBeEmpty = false): string[] {
  if (!Array.isArray(value)) fail(pointer(path), 'must be an array of strings')
  if (value.length === 0 && !mayBeEmpty) fail(pointer(path), 'must not be empty (a rule that names nothing allows nothing)')
  value.forEach((p: unknown, j: number) => {
    if (typeof p !== 'string' || p === '') fail(pointer([...path, j]), 'must be a non-empty string')
    if (p.length > MAX_PATTERN) fail(pointer([...path, j]), `longer than ${MAX_PATTERN} characters`)
  })
  return value as string[]
}

/** Why `p` is not an identity pattern, or null when it is one. */
function checkIdentityPattern (p: string): string | null {
  const star = p.indexOf('*')
  if (star >= 0) {
    if (star !== p.length - 1) return `"*" only at the end (a prefix): ${JSON.stringify(p)}`
    if (!p.startsWith('spiffe://')) return `a prefix pattern must start with "spiffe://": ${JSON.stringify(p)}`
    return null
  }
  return parseSpiffeUri(p) != null ? null : `${JSON.stringify(p)} is not spiffe://<trust-domain>/<worker|client|operator|metrics>/<name>, nor a prefix ending with "*"`
}

/** Exact ids in a Set, prefixes in a list. */
function identityMatcher (patterns: string[]): (id: string) => boolean {
  const exact = new Set(patterns.filter(p => !p.endsWith('*')))
  const prefixes = patterns.filter(p => p.endsWith('*')).map(p => p.slice(0, -1))
  if (prefixes.length === 0) return id => exact.has(id)
  return id => exact.has(id) || prefixes.some(p => id.startsWith(p))
}

/**
 * A matcher for a list of globs (`*` any run, `?` one UTF-16 code unit):
 * literals in a Set, each other glob split once at its stars. Not a
 * RegExp: `^.*a.*a.*a.*b$` backtracks, and took 1.3 s on a 256-character
 * capability name. Matching the pieces between stars leftmost-first is
 * exact for globs and takes at most (name length x glob length) steps.
 */
export function globMatcher (globs: string[]): (name: string) => boolean {
  const literals = new Set(globs.filter(g => !/[*?]/.test(g)))
  const patterns = globs.filter(g => /[*?]/.test(g)).map(compileGlob)
  if (patterns.length === 0) return name => literals.has(name)
  return name => literals.has(name) || patterns.some(p => p(name))
}

function compileGlob (glob: string): (name: string) => boolean {
  const pieces = glob.split('*')
  if (pieces.length === 1) return name => name.length === glob.length && pieceAt(name, 0, glob)
  const first = pieces[0]
  const last = pieces[pieces.length - 1]
  const middle = pieces.slice(1, -1).filter(p => p !== '')
  const min = first.length + last.length + middle.reduce((n, p) => n + p.length, 0)
  return name => {
    if (name.length < min || !pieceAt(name, 0, first) || !pieceAt(name, name.length - last.length, last)) return false
    let at = first.length
    const end = name.length - last.length
    for (const piece of middle) {
      const found = findPiece(name, at, end, piece)
      if (found < 0) return false
      at = found + piece.length
    }
    return true
  }
}

/** True when `piece` (`?` matching any one code unit) matches `name` at `at`. */
function pieceAt (name: string, at: number, piece: string): boolean {
  for (let i = 0; i < piece.length; i++) {
    const c = piece.charCodeAt(i)
    if (c !== 63 /* ? */ && c !== name.charCodeAt(at + i)) return false
  }
  return true
}

/** The first position in [from, end - piece.length] where `piece` matches, or -1. */
function findPiece (name: string, from: number, end: number, piece: string): number {
  if (!piece.includes('?')) {
    const i = name.indexOf(piece, from)
    return i >= 0 && i + piece.length <= end ? i : -1
  }
  for (let i = from; i + piece.length <= end; i++) if (pieceAt(name, i, piece)) return i
  return -1
}
