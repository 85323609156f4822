import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  AUTH_REASONS, AuthError, CapmeshError, ConfigError, ERROR_CODES, InvalidStateError, NoHealthyWorkerError, NoWorkerError, StoreError, TlsError, ValidationError,
  type ErrorCode
} from '../../src/errors.ts'

const DOC = resolve(import.meta.dirname, '../../docs/errors.md')

/** `| \`CODE\` | status | ...` rows of the table in docs/errors.md. */
function documented (): Map<string, number> {
  const rows = new Map<string, number>()
  for (const line of readFileSync(DOC, 'utf8').split('\n')) {
    const m = /^\|\s*`(CAPMESH_ERR_[A-Z_]+)`\s*\|\s*(\d{3})\s*\|/.exec(line)
    if (m != null) rows.set(m[1], Number(m[2]))
  }
  return rows
}

describe('error codes', () => {
  const codes = Object.keys(ERROR_CODES) as ErrorCode[]

  it.each(codes)('%s is documented in docs/errors.md with its HTTP status', code => {
    expect(documented().get(code)).toBe(ERROR_CODES[code].status)
  })

  it('every code has a description and a 4xx/5xx status', () => {
    for (const code of codes) {
      expect(ERROR_CODES[code].description.length).toBeGreaterThan(0)
      expect(ERROR_CODES[code].status).toBeGreaterThanOrEqual(400)
      expect(ERROR_CODES[code].status).toBeLessThan(600)
    }
  })

  it('each error class carries its name, code and the status from the table', () => {
    const cases: Array<[CapmeshError, string, ErrorCode]> = [
      [new ValidationError('x', [{ field: 'body/a', message: 'bad' }]), 'ValidationError', 'CAPMESH_ERR_VALIDATION'],
      [new ConfigError('x'), 'ConfigError', 'CAPMESH_ERR_CONFIG'],
      [new InvalidStateError('x'), 'InvalidStateError', 'CAPMESH_ERR_INVALID_STATE'],
      [new NoWorkerError('echo', 'invoke'), 'NoWorkerError', 'CAPMESH_ERR_NO_WORKER'],
      [new NoHealthyWorkerError('echo', 'invoke', 3), 'NoHealthyWorkerError', 'CAPMESH_ERR_NO_HEALTHY_WORKER'],
      [new TlsError('x'), 'TlsError', 'CAPMESH_ERR_TLS'],
      [new StoreError('x'), 'StoreError', 'CAPMESH_ERR_STORE'],
      [new CapmeshError('CAPMESH_ERR_INTERNAL', 'x'), 'CapmeshError', 'CAPMESH_ERR_INTERNAL'],
      [new AuthError('token_expired', 'x'), 'AuthError', 'CAPMESH_ERR_UNAUTHENTICATED'],
      [new AuthError('identity_denied', 'x'), 'AuthError', 'CAPMESH_ERR_FORBIDDEN'],
      [new AuthError('worker_owned_by_other', 'x'), 'AuthError', 'CAPMESH_ERR_WORKER_IDENTITY'],
      [new AuthError('route_policy', 'x'), 'AuthError', 'CAPMESH_ERR_ROUTE_DENIED']
    ]
    for (const [err, name, code] of cases) {
      expect(err).toBeInstanceOf(Error)
      expect(err).toBeInstanceOf(CapmeshError)
      expect(err.name).toBe(name)
      expect(err.code).toBe(code)
      expect(err.status).toBe(ERROR_CODES[code].status)
    }
    expect(new ValidationError('x', [{ field: 'body/a', message: 'bad' }]).problems).toEqual([{ field: 'body/a', message: 'bad' }])
    expect(new NoHealthyWorkerError('echo', 'invoke', 3)).toMatchObject({ capability: 'echo', retryAfter: 3 })
    expect(new NoWorkerError('echo', 'invoke').capability).toBe('echo')
  })

  it('an AuthError sends its reason; a 401 asks for a bearer token, a 403 does not', () => {
    const unauthenticated = new AuthError('token_signature', 'bad signature')
    expect(unauthenticated.status).toBe(401)
    expect(unauthenticated.wireBody()).toEqual({ error: 'unauthenticated', code: 'CAPMESH_ERR_UNAUTHENTICATED', message: 'bad signature', reason: 'token_signature' })
    expect(unauthenticated.headers()).toEqual({ 'www-authenticate': 'Bearer' })
    const forbidden = new AuthError('worker_not_covered', 'not yours')
    expect(forbidden.status).toBe(403)
    expect(forbidden.wireBody()).toMatchObject({ error: 'worker_identity', code: 'CAPMESH_ERR_WORKER_IDENTITY', reason: 'worker_not_covered' })
    expect(forbidden.headers()).toEqual({})
    expect(new AuthError('route_policy', 'x').wireBody()).toMatchObject({ error: 'route_denied', reason: 'route_policy' })
    expect(new AuthError('role_not_allowed', 'x').wireBody()).toMatchObject({ error: 'forbidden', reason: 'role_not_allowed' })
  })

  it.each(Object.keys(AUTH_REASONS))('the identity failure reason %s is documented in docs/errors.md with its code', reason => {
    const row = readFileSync(DOC, 'utf8').split('\n').find(line => line.startsWith(`| \`${reason}\` |`))
    expect(row).toContain(`\`${AUTH_REASONS[reason as keyof typeof AUTH_REASONS]}\``)
  })
})
