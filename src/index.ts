/**
 * capmesh — a peer-to-peer service-registry mesh for capability-routed
 * workers. This is the package's public surface.
 *
 * @example
 * import { controller, resolveControllerConfig, localPreset } from 'capmesh'
 * const c = await controller(resolveControllerConfig(localPreset({ id: 'a' })))
 */
import { startController, type Controller } from './controller/index.ts'
import type { ControllerConfig } from './config.ts'

/** Starts a controller with a resolved configuration. */
export async function controller (config: ControllerConfig): Promise<Controller> {
  return await startController({ config })
}

export { Controller } from './controller/index.ts'
export { ControllerCore, controllerView } from './core/index.ts'
export type { ControllerView, ViewEvents } from './core/index.ts'
export { networkFaults, NetworkFaults } from './gossip/index.ts'
export { Admission, parseAllowList, installMeshKey, readMeshKeys, removeMeshKey, useMeshKey, meshKeyId } from './gossip/index.ts'
export type { AllowEntry, Refusal, RefusalReason } from './gossip/index.ts'
export * from './wire/index.ts'
export { registerBatch, WorkerAgent, workerAgent } from './agent/index.ts'
export { agentMetrics, AgentMetrics, controllerMetrics, ControllerMetrics } from './metrics/index.ts'
export type { AgentCounters, AgentEvents, BatchResult, WorkerAgentInit } from './agent/index.ts'
export { RouteClient, routeClient } from './client/index.ts'
export type { RouteClientCounters, RouteClientEvents, RouteClientInit } from './client/index.ts'
export { localPreset, parseRawConfig, readConfigFile, resolveControllerConfig } from './config.ts'
export type { ControllerConfig, RawConfig } from './config.ts'
export * from './errors.ts'
export { Liveness } from './liveness/index.ts'
export type { HealthState } from './liveness/index.ts'
export { Registry, Origin } from './registry/index.ts'
export type { WorkerRecord } from './registry/index.ts'
export { Router } from './routing/index.ts'
export { ensureTls, issueIdentity, readCa } from './tls/index.ts'
export type { IssueIdentityInit, IssuedIdentity } from './tls/index.ts'
export { covers, createTokenVerifier, defaultRoutePolicy, identityFromCertificate, loadPolicy, loadSubjectMap, loadTokenKeys, parseSpiffeId, policyWithDenials } from './identity/index.ts'
export type { Identity, Role, RoutePolicy, SubjectMap, TokenVerifier, TokenVerifierInit } from './identity/index.ts'
