import { describe, expect, it } from 'vitest'
import { readSse, SseParser, sseFrame } from '../../../src/utils/sse.ts'

describe('SseParser', () => {
  it('reads what sseFrame writes, whatever the chunking', () => {
    const text = sseFrame('snapshot', '{"a":1}', 'e-1') + ': keepalive\n\n' + sseFrame('worker_added', '{"b":"x\\ny"}', 'e-2') + sseFrame('overflow', '{}')
    for (const size of [1, 2, 3, 7, text.length]) {
      const p = new SseParser()
      const out = []
      for (let i = 0; i < text.length; i += size) out.push(...p.feed(text.slice(i, i + size)))
      expect(out, `chunks of ${size}`).toEqual([
        { event: 'snapshot', data: '{"a":1}', id: 'e-1' },
        { event: 'worker_added', data: '{"b":"x\\ny"}', id: 'e-2' },
        // No id line: the last id stays (as EventSource's lastEventId).
        { event: 'overflow', data: '{}', id: 'e-2' }
      ])
      expect(p.lastEventId).toBe('e-2')
    }
  })

  it('follows the specification: CR, LF and CRLF line ends (CRLF split across chunks), multi-line data, fields without a space, retry, a BOM', () => {
    const p = new SseParser()
    const out = [...p.feed('\uFEFFdata:one\r'), ...p.feed('\ndata: two\rid: 7\r\n\r'), ...p.feed('\nevent:x\nretry: 250\ndata\n\n'), ...p.feed('id: bad\u0000\ndata: z\n\n')]
    expect(out).toEqual([{ event: 'message', data: 'one\ntwo', id: '7' }, { event: 'x', data: '', id: '7' }, { event: 'message', data: 'z', id: '7' }])
    expect(p.retry).toBe(250)
  })

  it('dispatches nothing for an event without data, and sseFrame splits data with line breaks into data lines', () => {
    const p = new SseParser()
    expect(p.feed('event: x\nid: 3\n\n')).toEqual([])
    expect(p.lastEventId).toBe('3')
    expect(sseFrame('e', 'a\nb')).toBe('event: e\ndata: a\ndata: b\n\n')
  })

  it('readSse decodes UTF-8 split across chunks', async () => {
    const bytes = Buffer.from(sseFrame('e', '"é€😀"', '1'))
    const chunks = [...bytes].map(b => Uint8Array.of(b))
    const out = []
    for await (const e of readSse((async function * () { yield * chunks })())) out.push(e)
    expect(out).toEqual([{ event: 'e', data: '"é€😀"', id: '1' }])
  })
})
