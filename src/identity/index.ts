/**
 * identity — who a caller is, and what the route policy lets it do. An
 * identity is a SPIFFE id `spiffe://<trust-domain>/<role>/<name>` with a
 * role (`worker`, `client`, `operator`, `metrics`) and the worker ids it may
 * act for. It comes from a client certificate Node's TLS verified (its URI
 * SAN, or its subject through a subject map) or from a bearer token (a JWT
 * signed with EdDSA or ES256). A worker certificate and a worker token with
 * the same name are the same identity. Failures are AuthErrors (errors.ts)
 * with a stable `reason`.
 *
 * No I/O but reading the configured files once; nothing here knows HTTP.
 *
 * @example
 * const verifyToken = createTokenVerifier({ trustDomain: 'capmesh.local', keys: loadTokenKeys(['issuer.pub.pem']) })
 * const subjectMap = loadSubjectMap('subjects.json', 'capmesh.local')
 * const policy = policyWithDenials(loadPolicy('policy.json'), ['spiffe://capmesh.local/worker/w13'])
 *
 * // per request
 * const socket = request.raw.socket as TLSSocket
 * const who = socket.authorized
 *   ? identityFromCertificate(socket.getPeerCertificate(), { trustDomain: 'capmesh.local', subjectMap })
 *   : await verifyToken(bearer)                      // throws AuthError (401)
 * if (policy.denies(who.id)) throw new AuthError('identity_denied', `${who.id} is denied`)
 * if (!covers(who, body.worker_id)) throw new AuthError('worker_not_covered', `${who.id} may not act for ${body.worker_id}`)
 * if (!policy.allowsRoute(who, body.capability)) throw new AuthError('route_policy', `${who.id} may not route to ${body.capability}`)
 */
export { covers, createIdentity, isIdentityName, isRole, isTrustDomain, isWorkerId, parseSpiffeId, parseSpiffeUri, spiffeId } from './identity.ts'
export type { CreateIdentityInit, Identity, Role, SpiffeParts } from './identity.ts'
export { identityFromCertificate, loadSubjectMap, parseSubjectMap, splitAltNames, subjectKey } from './certificate.ts'
export type { CertificateIdentityInit, CertificateLike, SubjectMap } from './certificate.ts'
export { createTokenVerifier, loadTokenKeys } from './token.ts'
export type { TokenVerifier, TokenVerifierInit } from './token.ts'
export { defaultRoutePolicy, globMatcher, loadPolicy, parsePolicy, policyWithDenials } from './policy.ts'
export type { RoutePolicy, RoutePolicyInit } from './policy.ts'
