/**
 * membership — the other controllers: one member table (controller id ↔
 * peer id, status, last heard, registry hash, what each last said of its
 * workers) and the liveness-digest protocol (build, wire schema, publish
 * policy, apply; full digests and word changes), with peer self-preservation. No libp2p here: the mesh
 * reaches it through MembershipTransport.
 *
 * @example
 * const membership = new Membership({ controllerId: 'a', local, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 })
 * membership.attach(transport)
 * setInterval(() => { membership.tick() }, 1000)
 * membership.on('status', (id, from, to) => console.log(`${id} is ${to}`))
 */
export { LIVENESS_CHANGES_TOPIC, LIVENESS_TOPIC, Membership } from './membership.ts'
export type { LocalWord, MembershipEvents, MembershipInit, MembershipTransport } from './membership.ts'
export { MemberTable } from './members.ts'
export type { Member, MemberStatus, MemberTableEvents, MemberTableInit } from './members.ts'
export { buildDigest, decodeChanges, decodeDigest, Digest, DigestError, encodeChanges, encodeDigest, partOf, WordChanges } from './digest.ts'
export type { DigestHeader, OwnedWorker, Word } from './digest.ts'
