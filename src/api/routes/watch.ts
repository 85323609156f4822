import type { ServerResponse } from 'node:http'
import { DEFAULT_WATCH_BUFFER_BYTES, DEFAULT_WATCH_KEEPALIVE_MS, WATCH_CLOSE_GRACE_MS, WATCH_STALLED_KEEPALIVES } from '../../constants.ts'
import type { ControllerView, WatchCursor, Watcher, WatchFilter, WatchMessage } from '../../core/index.ts'
import { ValidationError } from '../../errors.ts'
import { SSE_KEEPALIVE, sseFrame } from '../../utils/sse.ts'
import { ErrorBody, WATCH_EVENT_ID, WatchQuerystring, type WatchEvent, type WatchKind, type WatchOverflowData } from '../../wire/index.ts'
import type { WatcherSlots } from '../plugins/watchers.ts'
import type { Api, ApiComponents, WatchLimits } from '../types.ts'

/**
 * GET /watch — what changes at this controller, as Server-Sent Events:
 * workers added, updated, removed (kind `worker`), the state it routes a
 * worker by (`health`), other controllers' status and self-preservation
 * (`controller`). Every event has an id (`<epoch>-<index>`); reconnecting
 * with the last one (`Last-Event-ID`, or `?since=`) resumes without loss, and
 * a cursor the change log cannot resume from (another epoch, too old, none)
 * gets a `snapshot` first. Filters: `?capability=` (repeatable), `?kind=`.
 *
 * The stream *pulls* from the change log: events are written while the
 * connection holds less than `bufferBytes` unsent, and the rest wait in the
 * log, so a slow reader costs at most that much memory. One that falls
 * further behind than the log holds (`lagged`), or reads nothing for
 * WATCH_STALLED_KEEPALIVES keepalive intervals (`stalled`), gets a last
 * `overflow` event saying why and is disconnected (its connection destroyed
 * WATCH_CLOSE_GRACE_MS later if it does not read even that).
 */
export function watchRoute (app: Api, { view, watch }: ApiComponents, slots: WatcherSlots): void {
  const limits: WatchLimits = { maxWatchers: slots.max, bufferBytes: watch?.bufferBytes ?? DEFAULT_WATCH_BUFFER_BYTES, keepaliveMs: watch?.keepaliveMs ?? DEFAULT_WATCH_KEEPALIVE_MS }
  const frames = new Frames()
  app.get('/watch', {
    config: { access: ['client'] },
    schema: {
      summary: 'Watch changes (Server-Sent Events: worker_added, worker_updated, worker_removed, worker_state, controller_status, self_preservation, snapshot, overflow)',
      querystring: WatchQuerystring,
      produces: ['text/event-stream'],
      response: {
        200: {
          description: 'A text/event-stream: events with `id: <epoch>-<index>`, `event: <name>` and `data: <JSON>` (schemas: WATCH_EVENT_SCHEMAS in src/wire/api.ts), `: keepalive` comments.',
          content: { 'text/event-stream': { schema: { type: 'string' } } }
        },
        400: ErrorBody,
        503: ErrorBody
      }
    }
  }, async (req, reply) => {
    // fastify answers HEAD with the GET handler: headers only, no stream held open.
    if (req.method === 'HEAD') return await reply.type('text/event-stream; charset=utf-8').header('cache-control', 'no-cache').send('')
    const from = cursorOf(req.headers['last-event-id'], req.query.since, view)
    const filter = filterOf(req.query.capability, req.query.kind)
    let stream: WatchStream | null = null
    // Refused (503) before anything is written, through the error handler like any error.
    const release = slots.acquire(() => { stream?.end(0) })
    reply.hijack()
    const snapshotKey = filter.capabilities == null ? '*' : JSON.stringify([...filter.capabilities].sort())
    stream = new WatchStream(reply.raw, view.watch(from, filter), { limits, frames, view, release, snapshotKey })
    stream.start()
  })
}

/** The filter a query string asks for: `?capability=` (repeatable), `?kind=` (comma-separated). */
function filterOf (capability: string | string[] | undefined, kind: string | undefined): WatchFilter {
  const caps = capability == null ? null : new Set(Array.isArray(capability) ? capability : [capability])
  const kinds = kind == null ? null : new Set(kind.split(',') as WatchKind[])
  return { capabilities: caps, kinds }
}

/**
 * Where a watcher resumes: the Last-Event-ID header (it wins, as the SSE
 * specification has a reconnecting EventSource send it), else `?since=`.
 * Malformed, or ahead of this controller's log in its own epoch (no client
 * can have seen that): 400. Another epoch or too old: a snapshot (the log
 * decides). None: a snapshot.
 */
export function cursorOf (header: string | string[] | undefined, since: string | undefined, view: ControllerView): WatchCursor | null {
  if (Array.isArray(header)) throw bad('header/last-event-id', 'must be given once')
  const [raw, field] = header != null ? [header, 'header/last-event-id'] : [since, 'querystring/since']
  if (raw == null || raw === '') return null
  const m = WATCH_EVENT_ID.exec(raw)
  if (m == null) throw bad(field, 'must be an event id as this controller sends it (<epoch>-<index>, e.g. 4f2a9c1b03de-1234)')
  const cursor = { epoch: m[1], index: Number(m[2]) }
  const pos = view.changes()
  if (cursor.epoch === pos.epoch && cursor.index > pos.index) throw bad(field, `is ahead of this controller's change log (epoch ${pos.epoch} is at index ${pos.index})`)
  return cursor
}

const bad = (field: string, message: string): ValidationError => new ValidationError(`${field} ${message}`, [{ field, message }])

/**
 * Encoded events, shared: an event's frame is built once for every watcher
 * that gets it, and a snapshot once for every watcher that starts at the
 * same index with the same filter (a reconnect storm after a restart),
 * kept only while something still holds it.
 */
class Frames {
  private readonly events = new WeakMap<WatchEvent, Buffer>()
  private snapshot: { key: string, buf: WeakRef<Buffer> } | null = null

  of (m: Exclude<WatchMessage, { type: 'lagged' }>, filter: string): Buffer {
    if (m.type === 'event') {
      let buf = this.events.get(m.event)
      if (buf == null) this.events.set(m.event, buf = Buffer.from(sseFrame(m.event.event, JSON.stringify(m.event.data), m.event.id)))
      return buf
    }
    const s = m.snapshot
    const key = `${s.epoch}-${s.index}|${filter}`
    let buf = this.snapshot?.key === key ? this.snapshot.buf.deref() : undefined
    if (buf == null) {
      buf = Buffer.from(sseFrame('snapshot', JSON.stringify(s), `${s.epoch}-${s.index}`))
      this.snapshot = { key, buf: new WeakRef(buf) }
    }
    return buf
  }
}

/** One open `/watch` response. */
class WatchStream {
  private readonly res: ServerResponse
  private readonly watcher: Watcher
  private readonly limits: WatchLimits
  private readonly frames: Frames
  private readonly view: ControllerView
  private readonly release: () => void
  /** What makes two watchers' snapshots at one index the same: their capability filter. */
  private readonly snapshotKey: string
  private keepalive: NodeJS.Timeout | null = null
  private grace: NodeJS.Timeout | null = null
  private ending = false
  private closed = false
  /** Keepalive intervals in a row the connection stayed over the limit. */
  private stalled = 0
  /** The last change index written. */
  private delivered: number

  constructor (res: ServerResponse, watcher: Watcher, o: { limits: WatchLimits, frames: Frames, view: ControllerView, release: () => void, snapshotKey: string }) {
    this.res = res
    this.watcher = watcher
    this.limits = o.limits
    this.frames = o.frames
    this.view = o.view
    this.release = o.release
    this.snapshotKey = o.snapshotKey
    this.delivered = watcher.position
  }

  start (): void {
    const res = this.res
    res.on('close', () => { this.cleanup() })
    // Writes after the peer left fail; 'close' follows and cleans up.
    res.on('error', () => {})
    res.on('drain', () => { this.pump() })
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // Proxies (nginx) would otherwise buffer the stream.
      'x-accel-buffering': 'no'
    })
    // The headers go now even when there is nothing to replay: the client knows it is watching.
    res.flushHeaders()
    this.watcher.onReady(() => { this.pump() })
    this.keepalive = setInterval(() => { this.tick() }, this.limits.keepaliveMs)
    this.keepalive.unref()
    this.pump()
  }

  /** Writes what the watcher has while the connection takes it. */
  private pump (): void {
    if (this.ending) return
    const res = this.res
    if (res.destroyed) return
    // A watcher that cannot take more may still be lapped meanwhile: cut it off then, not when it next reads.
    let lagged = this.watcher.lagged
    let corked = false
    while (!lagged && res.writableLength <= this.limits.bufferBytes) {
      const m = this.watcher.next()
      if (m == null) break
      if (m.type === 'lagged') {
        lagged = true
        break
      }
      if (!corked) {
        res.cork()
        corked = true
      }
      res.write(this.frames.of(m, this.snapshotKey))
      this.delivered = m.type === 'event' ? m.event.index : m.snapshot.index
    }
    if (corked) res.uncork()
    if (lagged) {
      const pos = this.view.changes()
      this.overflow('lagged', `this watcher fell behind the change log (it holds the last ${pos.index - pos.oldest + 1} changes, --watch-log-size): reconnect to get a snapshot`)
    }
  }

  private tick (): void {
    if (this.ending) return
    const res = this.res
    if (res.writableLength > this.limits.bufferBytes) {
      if (++this.stalled >= WATCH_STALLED_KEEPALIVES) {
        this.overflow('stalled', `this watcher read nothing while ${res.writableLength} bytes waited for it, for ${WATCH_STALLED_KEEPALIVES} keepalive intervals`)
      }
      return
    }
    this.stalled = 0
    res.write(SSE_KEEPALIVE)
    // A drain may have come while nothing was waiting for it.
    this.pump()
  }

  /** The last event: why this watcher is cut off. Then the end. */
  private overflow (reason: WatchOverflowData['reason'], message: string): void {
    const data: WatchOverflowData = { reason, message, buffered_bytes: this.res.writableLength, limit_bytes: this.limits.bufferBytes, index: this.delivered }
    this.res.write(sseFrame('overflow', JSON.stringify(data)))
    this.end(WATCH_CLOSE_GRACE_MS)
  }

  /** Ends the response; destroys the connection if it has not taken the rest within `graceMs`. */
  end (graceMs: number): void {
    if (this.ending) return
    this.ending = true
    this.stop()
    this.res.end()
    if (this.closed) return
    this.grace = setTimeout(() => { this.res.destroy() }, graceMs)
    this.grace.unref()
  }

  private stop (): void {
    this.watcher.close()
    if (this.keepalive != null) clearInterval(this.keepalive)
    this.keepalive = null
  }

  private cleanup (): void {
    if (this.closed) return
    this.closed = true
    this.ending = true
    this.stop()
    if (this.grace != null) clearTimeout(this.grace)
    this.grace = null
    this.release()
  }
}
