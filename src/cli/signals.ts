import { STOP_GRACE_MS } from '../constants.ts'

/**
 * Stops cleanly on Ctrl-C / SIGTERM; a second signal exits at once, and so
 * does a stop still running after `graceMs` (code 1, saying so).
 */
export function stopOnSignal (stop: () => Promise<void>, graceMs = STOP_GRACE_MS): void {
  let stopping = false
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) process.exit(130)
    stopping = true
    console.error(`\n${sig}: stopping...`)
    setTimeout(() => {
      console.error(`the stop did not finish within ${graceMs} ms: exiting anyway`)
      process.exit(1)
    }, graceMs)
    stop().then(() => process.exit(0), (err: unknown) => {
      console.error(err)
      process.exit(1)
    })
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}

/**
 * A process started by capmesh's launcher (with an IPC channel to it) gets
 * SIGTERM when the channel closes: its parent is gone, however it died
 * (kill -9, a broken pipe). Installed first thing, so that a child still
 * starting up goes too.
 */
export function stopWithParent (): void {
  if (process.send == null) return
  process.once('disconnect', () => { process.kill(process.pid, 'SIGTERM') })
}
