import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { describe, expect, it } from 'vitest'
import { useHalfWindowUpdates, windowUpdateDue } from '../../../src/gossip/yamux-window.ts'

/** A YamuxStream's window bookkeeping, with the frames it would send recorded. */
function stream (state: StreamState, recvWindow: number, recvWindowCapacity: number): { frames: Array<{ type: number, flag: number, length: number }>, s: Record<string, unknown> } {
  const frames: Array<{ type: number, flag: number, length: number }> = []
  const s: Record<string, unknown> = {
    state,
    recvWindow,
    recvWindowCapacity,
    maxStreamWindowSize: 16 * 1024 * 1024,
    epochStart: Date.now(),
    streamId: 1,
    getRTT: () => -1,
    sendFrame: (header: { type: number, flag: number, length: number }) => { frames.push(header); return true }
  }
  Object.setPrototypeOf(s, YamuxStream.prototype)
  return { frames, s }
}

const WINDOW = 256 * 1024

describe('yamux window updates as go-yamux', () => {
  useHalfWindowUpdates()
  const send = (s: Record<string, unknown>): void => { (s as unknown as { sendWindowUpdate: () => void }).sendWindowUpdate() }

  it('sends no update while less than half of the receive window is used', () => {
    const { frames, s } = stream(StreamState.Established, WINDOW, WINDOW - 300)
    send(s)
    expect(frames).toEqual([])
    expect(windowUpdateDue({ state: StreamState.Established, recvWindow: WINDOW, recvWindowCapacity: WINDOW / 2 + 1 })).toBe(false)
  })

  it('gives the whole used window back once half of it is used', () => {
    const { frames, s } = stream(StreamState.Established, WINDOW, WINDOW / 2 - 10)
    send(s)
    expect(frames).toHaveLength(1)
    expect(frames[0].length).toBe(WINDOW / 2 + 10)
    expect(s.recvWindowCapacity).toBe(WINDOW)
  })

  it('always sends the update that carries a SYN or an ACK', () => {
    for (const state of [StreamState.Init, StreamState.SYNReceived]) {
      const { frames, s } = stream(state, WINDOW, WINDOW)
      send(s)
      expect(frames, StreamState[state]).toHaveLength(1)
      expect(frames[0].flag, StreamState[state]).not.toBe(0)
    }
  })

  it('lets a paused stream record its epoch as before, sending nothing', () => {
    const { frames, s } = stream(StreamState.Paused, WINDOW, 0)
    s.epochStart = 0
    send(s)
    expect(frames).toEqual([])
    expect(s.epochStart).toBeGreaterThan(0)
  })
})
