/**
 * Who is calling, on every request, and whether its role may use the
 * endpoint. An identity comes from the client certificate Node's TLS
 * verified against the trusted client CAs (its SPIFFE URI SAN, or its
 * subject through the subject map), else from a bearer token (a JWT checked
 * by the token verifier). No identity is a 401, the wrong role or a denied
 * identity a 403 (AuthError, one generic branch of the error handler);
 * nothing behind the hook runs for a refused request. What a worker identity
 * may do to which worker is the core's to decide (it knows who registered
 * each); which capabilities a client may route to is the route policy's.
 *
 * Each route says who may call it in its config: `roles` (operators may
 * call everything) or `open` (no identity needed: `GET /health` for load
 * balancers, unless configured otherwise).
 */
import type { TLSSocket } from 'node:tls'
import type { FastifyRequest } from 'fastify'
import { AuthError } from '../../errors.ts'
import { identityFromCertificate, type Identity, type Role, type RoutePolicy, type SubjectMap, type TokenVerifier } from '../../identity/index.ts'
import type { Api } from '../types.ts'

export interface AuthInit {
  /** `off`: no identity is asked for, every request acts as null (anyone may do anything). */
  mode: 'required' | 'off'
  /** The trust domain of the SPIFFE ids accepted. */
  trustDomain: string
  /** Identities for certificates without a SPIFFE SAN, by subject. @default none */
  subjectMap?: SubjectMap
  /** Checks bearer tokens. @default none (tokens are refused) */
  verifyToken?: TokenVerifier
  /** Who may route where, and who is denied. */
  policy: RoutePolicy
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling: null with auth off, or on an open route. */
    identity: Identity | null
    /** Why the request was refused (a reason of AUTH_REASONS), for the metrics. */
    authFailure: string | null
  }
  interface FastifyContextConfig {
    /** Roles that may call the route (operators always may), or `open` for anyone. */
    access?: Role[] | 'open'
  }
}

export function authPlugin (app: Api, init: AuthInit): void {
  app.decorateRequest('identity', null)
  app.decorateRequest('authFailure', null)
  if (init.mode === 'off') return
  // The identity a connection's certificate proves, once per connection (keep-alive: many requests).
  const byConnection = new WeakMap<TLSSocket, Identity | AuthError | null>()

  const fromCertificate = (socket: TLSSocket): Identity | null => {
    let known = byConnection.get(socket)
    if (known === undefined) {
      const cert = socket.getPeerCertificate()
      if (cert == null || Object.keys(cert).length === 0) known = null
      else if (!socket.authorized) known = new AuthError('certificate_untrusted', `the client certificate was not verified: ${String(socket.authorizationError)}`)
      else {
        try {
          known = identityFromCertificate(cert, { trustDomain: init.trustDomain, subjectMap: init.subjectMap })
        } catch (err) {
          known = err as AuthError
        }
      }
      byConnection.set(socket, known)
    }
    if (known instanceof AuthError) throw known
    return known
  }

  const fromToken = async (req: FastifyRequest): Promise<Identity | null> => {
    const raw = req.raw.rawHeaders
    let count = 0
    for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 13 && raw[i].toLowerCase() === 'authorization') count++
    if (count === 0) return null
    if (count > 1) throw new AuthError('token_malformed', 'more than one Authorization header')
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(req.headers.authorization ?? '')
    if (m == null) throw new AuthError('token_malformed', 'the Authorization header is not "Bearer <token>"')
    if (init.verifyToken == null) throw new AuthError('token_unknown_key', 'this controller takes no bearer tokens (no --token-key or --jwks)')
    return await init.verifyToken(m[1])
  }

  app.addHook('onRequest', async (req) => {
    const access = req.routeOptions.config.access
    if (access === 'open') return
    const identity = fromCertificate(req.raw.socket as TLSSocket) ?? await fromToken(req)
    if (identity == null) throw new AuthError('credentials_missing', 'no client certificate and no bearer token: this endpoint needs an identity')
    if (init.policy.denies(identity.id)) throw new AuthError('identity_denied', `${identity.id} is denied`)
    // Unknown routes (404) have no access list: any identity may learn that they do not exist.
    if (access != null && identity.role !== 'operator' && !access.includes(identity.role)) {
      throw new AuthError('role_not_allowed', `a ${identity.role} may not call ${req.method} ${req.routeOptions.url}`)
    }
    req.identity = identity
  })
}
