/**
 * stopOnSignal in a real child process: SIGTERM runs the clean stop and
 * exits 0; a stop that hangs is cut short after the grace period (exit 1,
 * saying so), so no CLI process outlives whoever told it to stop.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const SIGNALS = fileURLToPath(new URL('../../../src/cli/signals.ts', import.meta.url))

/** Starts a process that installs stopOnSignal with `stop` (JS source) and a grace of 800 ms, and says when ready. */
async function child (stop: string): Promise<{ pid: number, exit: Promise<{ code: number | null, stderr: string }>, signal: () => void }> {
  const script = `
    const { stopOnSignal } = await import(${JSON.stringify(SIGNALS)})
    stopOnSignal(${stop}, 800)
    setInterval(() => {}, 1000)
    console.log('ready')`
  const p = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exit = new Promise<{ code: number | null, stderr: string }>(resolve => p.once('exit', code => { resolve({ code, stderr }) }))
  await new Promise<void>((resolve, reject) => {
    p.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
    p.once('exit', () => { reject(new Error(`child exited before it was ready: ${stderr}`)) })
  })
  return { pid: p.pid!, exit, signal: () => { p.kill('SIGTERM') } }
}

describe('stopOnSignal', () => {
  it('runs the clean stop on SIGTERM and exits 0', async () => {
    const c = await child('async () => { await new Promise(r => setTimeout(r, 50)) }')
    c.signal()
    const { code, stderr } = await c.exit
    expect(code).toBe(0)
    expect(stderr).toContain('SIGTERM: stopping...')
    expect(stderr).not.toContain('exiting anyway')
  })

  it('exits 1 once the grace period is over when the stop hangs', async () => {
    const c = await child('() => new Promise(() => {})')
    c.signal()
    const { code, stderr } = await c.exit
    expect(code).toBe(1)
    expect(stderr).toContain('the stop did not finish within 800 ms: exiting anyway')
  })
})
