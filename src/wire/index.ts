/**
 * wire — the contract between controllers and their callers, declared once
 * in TypeBox: the platform's CapabilitySchema, every request, reply and
 * error body, /health and /mesh. The API validates and serialises with these
 * schemas; the router, the worker agent and the CLI use the types derived
 * from them. Loads nothing but typebox.
 *
 * @example
 * import { RouteBody, type RouteQuery, type RouteResult } from 'capmesh/wire'
 */
export * from './capability.ts'
export * from './api.ts'
