/**
 * Hooks attached to the routes that need them (from an `onRoute` hook) rather
 * than to every request: a route's settings are known when it is declared,
 * so the hook closes over them instead of reading `req.routeOptions` on each
 * request (fastify builds that object afresh at every access). Unknown
 * routes have no declaration: the 404 handler takes the same hooks from
 * here (`NotFoundHooks`), so a request for a path that does not exist is
 * authenticated, counted and answered like any other.
 */
import type { onRequestHookHandler, onResponseHookHandler, RouteOptions } from 'fastify'

/** Hooks the 404 handler runs (see server.ts). */
export interface NotFoundHooks {
  onRequest?: onRequestHookHandler[]
  onResponse?: onResponseHookHandler[]
}

/** Appends `hook` to the route's own `name` hooks (after any it declares). */
export function addRouteHook<K extends 'onRequest' | 'onResponse'> (route: RouteOptions, name: K, hook: RouteOptions[K] & Function): void {
  const cur = route[name] as unknown
  const list = cur == null ? [] : Array.isArray(cur) ? cur : [cur]
  ;(route as unknown as Record<string, unknown>)[name] = [...list, hook]
}

/** The 404 handler's hooks: every plugin's, in the order given. */
export function mergeNotFoundHooks (...parts: NotFoundHooks[]): NotFoundHooks {
  return {
    onRequest: parts.flatMap(p => p.onRequest ?? []),
    onResponse: parts.flatMap(p => p.onResponse ?? [])
  }
}
