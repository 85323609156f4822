/**
 * Server-Sent Events, both ends: `sseFrame` writes one event the way the
 * controller sends it, `SseParser` reads a stream the way the HTML
 * specification's EventSource does (lines ending in LF, CR or CRLF — also
 * when split across chunks —, `data:` lines joined with LF, `id:` kept until
 * changed, comments and unknown fields ignored, a leading BOM dropped), and
 * `readSse` turns a response body into events. No dependency: the route
 * client, the tests and the benchmarks read `/watch` with it.
 */

/** One dispatched event. `id` is the last event id seen so far (SSE keeps it across events); null if none. */
export interface SseEvent {
  event: string
  data: string
  id: string | null
}

/** One event as the controller writes it: `id:` (if any), `event:`, and `data:` (JSON has no newlines, so one line). */
export function sseFrame (event: string, data: string, id?: string): string {
  // JSON.stringify escapes line breaks inside strings; raw ones would end the field.
  const lines = data.includes('\n') || data.includes('\r') ? data.split(/\r\n|\r|\n/).map(l => `data: ${l}`).join('\n') : `data: ${data}`
  return `${id != null ? `id: ${id}\n` : ''}event: ${event}\n${lines}\n\n`
}

/** A comment line: ignored by every reader, it shows the stream is alive. */
export const SSE_KEEPALIVE = ': keepalive\n\n'

export class SseParser {
  private pending = ''
  private data: string[] = []
  private hasData = false
  private event = ''
  private lastId: string | null = null
  /** The last chunk ended in CR: an LF starting the next one belongs to it. */
  private afterCr = false
  private started = false
  /** The `retry:` the server last asked for (ms), null if none. */
  retry: number | null = null

  /** The id of the last event dispatched (what a reconnect sends as Last-Event-ID). */
  get lastEventId (): string | null { return this.lastId }

  /** Feeds decoded text; returns the events it completed. */
  feed (text: string): SseEvent[] {
    if (!this.started && text.length > 0) {
      this.started = true
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    if (this.afterCr && text.startsWith('\n')) text = text.slice(1)
    this.afterCr = false
    const out: SseEvent[] = []
    let buf = this.pending + text
    let start = 0
    for (let i = 0; i < buf.length; i++) {
      const ch = buf.charCodeAt(i)
      if (ch !== 10 && ch !== 13) continue
      this.line(buf.slice(start, i), out)
      if (ch === 13) {
        if (i + 1 === buf.length) this.afterCr = true
        else if (buf.charCodeAt(i + 1) === 10) i++
      }
      start = i + 1
    }
    buf = buf.slice(start)
    this.pending = buf
    return out
  }

  private line (line: string, out: SseEvent[]): void {
    if (line.length === 0) {
      if (this.hasData) out.push({ event: this.event === '' ? 'message' : this.event, data: this.data.join('\n'), id: this.lastId })
      this.data = []
      this.hasData = false
      this.event = ''
      return
    }
    if (line.charCodeAt(0) === 58) return // `:` a comment
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    switch (field) {
      case 'data':
        this.data.push(value)
        this.hasData = true
        break
      case 'event':
        this.event = value
        break
      case 'id':
        if (!value.includes('\u0000')) this.lastId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value)
        break
    }
  }
}

/**
 * The events of a streamed body (e.g. undici's), as they complete. `onChunk`
 * is called for every chunk read (comments included), for idle timers.
 */
export async function * readSse (body: AsyncIterable<Uint8Array | string>, parser = new SseParser(), onChunk?: () => void): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder('utf-8')
  for await (const chunk of body) {
    onChunk?.()
    const text = typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true })
    for (const e of parser.feed(text)) yield e
  }
  const rest = decoder.decode()
  if (rest.length > 0) for (const e of parser.feed(rest)) yield e
}
