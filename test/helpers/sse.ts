/**
 * A real SSE client for tests: `GET /watch` over HTTPS (undici, the given
 * identity), the stream parsed by src/utils/sse.ts, every event kept in
 * order with its JSON data. `until()` waits for an event matching a
 * predicate; `close()` drops the connection as a client going away would.
 */
import type { HttpsClient } from '../../src/utils/https-client.ts'
import { readSse, SseParser } from '../../src/utils/sse.ts'
import { eventually } from './controllers.ts'

export interface Received {
  event: string
  id: string | null
  data: any
}

export interface SseStream {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The error body when status is not 200. */
  error: any
  events: Received[]
  /** The stream ended (by the server, or close()). */
  ended: boolean
  /** The last event id seen (what a reconnect sends). */
  lastId: () => string | null
  until: (match: (e: Received) => boolean, what: string, timeoutMs?: number) => Promise<Received>
  close: () => void
}

export async function openWatch (client: HttpsClient, base: string, query = '', headers: Record<string, string> = {}): Promise<SseStream> {
  const res = await client.stream(`${base}/watch${query}`, { headers })
  const parser = new SseParser()
  const s: SseStream = {
    status: res.status,
    headers: res.headers,
    error: null,
    events: [],
    ended: false,
    lastId: () => parser.lastEventId,
    until: async (match, what, timeoutMs = 10_000) => (await eventually(() => s.events.find(match), what, timeoutMs))!,
    close: () => {
      res.close()
      s.ended = true
    }
  }
  if (res.status !== 200) {
    let text = ''
    for await (const chunk of res.body) text += Buffer.from(chunk).toString()
    s.error = JSON.parse(text)
    s.ended = true
    res.close()
    return s
  }
  void (async () => {
    try {
      for await (const e of readSse(res.body, parser)) s.events.push({ event: e.event, id: e.event === 'overflow' ? null : e.id, data: JSON.parse(e.data) })
    } catch {
      // Aborted or reset: the test looks at `ended`.
    }
    s.ended = true
    res.close()
  })()
  return s
}
