/** Stops cleanly on Ctrl-C / SIGTERM; a second signal exits at once. */
export function stopOnSignal (stop: () => Promise<void>): void {
  let stopping = false
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) process.exit(130)
    stopping = true
    console.error(`\n${sig}: stopping...`)
    stop().then(() => process.exit(0), (err: unknown) => {
      console.error(err)
      process.exit(1)
    })
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}
