/**
 * Running `capmesh ...` as a child process (the user's way), to completion.
 */
import { spawn } from 'node:child_process'
import { CLI } from '../../src/launch/index.ts'

export interface CliRun { code: number | null, stdout: string, stderr: string }

/** Runs `capmesh <args>` (with `env` added to this process's environment) and collects its output; killed (by its pid) after `timeoutMs`. */
export async function capmesh (args: string[], timeoutMs = 30_000, env: Record<string, string> = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  const code = await new Promise<number | null>(resolve => child.once('exit', code => { resolve(code) }))
  clearTimeout(timer)
  return { code, stdout, stderr }
}
