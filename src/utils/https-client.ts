/**
 * A small JSON-over-HTTPS client (undici) that trusts exactly the CA it is
 * given and says who it is with a client certificate or a bearer token: the
 * CLI, the demo, the agent and the tests all speak to controllers through
 * it. Certificate verification is always on.
 *
 * Every request carries the caller's active trace context (W3C
 * `traceparent`/`tracestate`) through @opentelemetry/api's global
 * propagator: a no-op until the process registers one (an application's
 * OpenTelemetry SDK, or the CLI's tracing), so a worker that traces gets
 * its registrations into the controllers' traces without asking.
 */
import { createSecureContext } from 'node:tls'
import { context, propagation } from '@opentelemetry/api'
import { Agent, buildConnector, Client, request } from 'undici'

export interface HttpsClientInit {
  /** PEM CA certificate(s) to trust. */
  ca: string | string[]
  /** PEM client certificate and its key: the caller's identity (mutual TLS). @default none */
  cert?: string
  key?: string
  /** A bearer token sent with every request (for callers without a certificate), or a function giving the current one. @default none */
  token?: string | (() => string)
  /** Per-request timeout (ms), connect included. @default 30000 */
  timeoutMs?: number
  /** Keep-alive connections per origin. @default 8 */
  connections?: number
}

export interface JsonResponse<T = any> {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: T
}

/** A response whose body is read as it arrives (Server-Sent Events). */
export interface StreamResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The body as it arrives. */
  body: AsyncIterable<Uint8Array>
  /** Closes the stream and its connection (idempotent). */
  close: () => void
}

export interface HttpsClient {
  /** Sends `body` as JSON (if given) and parses the JSON reply; non-JSON replies come back as text. */
  /** `opts.token`: a bearer token for this request instead of the client's (callers sharing one client's connections). */
  /** `opts.headers`: more request headers (they win over the trace context injected). */
  json: <T = any>(method: 'GET' | 'POST', url: string, body?: unknown, opts?: { timeoutMs?: number, signal?: AbortSignal, token?: string, headers?: Record<string, string> }) => Promise<JsonResponse<T>>
  /**
   * A GET whose body is streamed (e.g. `/watch`): answers once the headers
   * are in (within the timeout), then the body has no time limit; the
   * caller reads it and closes it when done (or aborts `signal`). Each
   * stream has a connection of its own, closed with it: a pooled one,
   * destroyed mid-body, made undici open a spare connection that then kept
   * the server's close waiting for its request timeout.
   */
  stream: (url: string, opts?: { headers?: Record<string, string>, timeoutMs?: number, signal?: AbortSignal }) => Promise<StreamResponse>
  /** POSTs `body` as it is, with `contentType` (e.g. a binary state import), and parses the JSON reply as `json` does. */
  upload: <T = any>(url: string, body: Uint8Array, contentType: string, opts?: { timeoutMs?: number }) => Promise<JsonResponse<T>>
  close: () => Promise<void>
}

export function httpsClient (init: HttpsClientInit): HttpsClient {
  const timeoutMs = init.timeoutMs ?? 30_000
  // One TLS context for every connection: built per connection (the default when only `ca` is
  // given), parsing the CA took a third of a 1,000-worker simulation harness's CPU.
  const tls = { secureContext: createSecureContext({ ca: init.ca, cert: init.cert, key: init.key }), timeout: timeoutMs }
  const token = init.token
  const headersOf = (hasBody: boolean, own: string | undefined, extra: Record<string, string> | undefined): Record<string, string> => {
    const h: Record<string, string> = {}
    propagation.inject(context.active(), h)
    if (hasBody) h['content-type'] = 'application/json'
    const t = own ?? (typeof token === 'function' ? token() : token)
    if (t != null) h.authorization = `Bearer ${t}`
    return extra == null ? h : Object.assign(h, extra)
  }
  // TLS sessions are resumed per host:port. undici keys its session cache by host name, which
  // for controllers addressed by IP (loopback above all) is one key for all of them, so nothing
  // resumed. A resumed handshake skips the certificate and its checks: 17-31% less CPU per new
  // connection on either side (npm run bench:tls), and a reconnect storm is made of those.
  const connectors = new Map<string, buildConnector.connector>()
  const connect: buildConnector.connector = (opts, callback) => {
    const key = `${opts.hostname}:${opts.port}`
    let c = connectors.get(key)
    if (c == null) connectors.set(key, c = buildConnector(tls))
    return c(opts, callback)
  }
  const dispatcher = new Agent({
    connect,
    connections: init.connections ?? 8,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs
  })
  return {
    async json (method, url, body, opts = {}) {
      const t = opts.timeoutMs ?? timeoutMs
      const signal = opts.signal != null ? AbortSignal.any([opts.signal, AbortSignal.timeout(t)]) : AbortSignal.timeout(t)
      const pending = request(url, {
        method,
        dispatcher,
        signal,
        headers: headersOf(body !== undefined, opts.token, opts.headers),
        body: body !== undefined ? JSON.stringify(body) : undefined,
        headersTimeout: t,
        bodyTimeout: t
      })
      // undici only honours the signal once a connection is up; while connecting or in the TLS
      // handshake (a black-holed peer) only the pool's connect timeout would apply. Race the signal.
      pending.catch(() => {})
      let onAbort = (): void => {}
      const aborted = new Promise<never>((_resolve, reject) => {
        onAbort = () => { reject(signal.reason) }
        if (signal.aborted) onAbort()
        else signal.addEventListener('abort', onAbort, { once: true })
      })
      const res = await Promise.race([pending, aborted]).finally(() => { signal.removeEventListener('abort', onAbort) })
      const text = await res.body.text()
      let parsed: unknown = text
      if (String(res.headers['content-type'] ?? '').includes('json') && text.length > 0) parsed = JSON.parse(text)
      return { status: res.statusCode, headers: res.headers, body: parsed as any }
    },
    async stream (url, opts = {}) {
      const t = opts.timeoutMs ?? timeoutMs
      // The timeout covers connecting and the headers (a black-holed peer), not the body that follows.
      const ac = new AbortController()
      const timer = setTimeout(() => { ac.abort(new Error(`no answer within ${t} ms`)) }, t)
      const onAbort = (): void => { ac.abort(opts.signal?.reason) }
      if (opts.signal?.aborted === true) onAbort()
      else opts.signal?.addEventListener('abort', onAbort, { once: true })
      const own = new Client(new URL(url).origin, { connect, pipelining: 1, headersTimeout: t, bodyTimeout: 0 })
      const close = (): void => {
        ac.abort()
        void own.destroy().catch(() => {})
      }
      ac.signal.addEventListener('abort', close, { once: true })
      try {
        const pending = request(url, {
          method: 'GET',
          dispatcher: own,
          signal: ac.signal,
          headers: { accept: 'text/event-stream', ...headersOf(false, undefined, opts.headers) },
          headersTimeout: t,
          // Silence between events is normal on a stream: the reader keeps its own idle timer.
          bodyTimeout: 0
        })
        pending.catch(() => {})
        const aborted = new Promise<never>((_resolve, reject) => {
          if (ac.signal.aborted) reject(ac.signal.reason)
          else ac.signal.addEventListener('abort', () => { reject(ac.signal.reason) }, { once: true })
        })
        aborted.catch(() => {})
        const res = await Promise.race([pending, aborted])
        return { status: res.statusCode, headers: res.headers, body: res.body, close }
      } catch (err) {
        close()
        throw err
      } finally {
        clearTimeout(timer)
      }
    },
    async upload (url, body, contentType, opts = {}) {
      const t = opts.timeoutMs ?? timeoutMs
      const res = await request(url, {
        method: 'POST',
        dispatcher,
        signal: AbortSignal.timeout(t),
        headers: headersOf(false, undefined, { 'content-type': contentType }),
        body,
        headersTimeout: t,
        bodyTimeout: t
      })
      const text = await res.body.text()
      let parsed: unknown = text
      if (String(res.headers['content-type'] ?? '').includes('json') && text.length > 0) parsed = JSON.parse(text)
      return { status: res.statusCode, headers: res.headers, body: parsed as any }
    },
    async close () {
      await dispatcher.close()
    }
  }
}
