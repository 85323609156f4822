/**
 * The simulation harness's way into a network namespace (sim/netns.ts):
 * started inside one (`ip netns exec NS node relay.ts SOCKET=HOST:PORT ...`),
 * it accepts connections on each Unix socket (a file, reachable from the
 * harness's namespace) and forwards them over TCP to HOST:PORT from inside
 * the namespace, so the packets take that host's network path, faults
 * included. TLS passes through untouched. Prints `ready` once it listens;
 * exits when its stdin closes (the harness is gone).
 */
import { createServer, connect, type Socket } from 'node:net'

const routes = process.argv.slice(2).map(a => {
  const m = /^(.+)=([^=:]+):(\d+)$/.exec(a)
  if (m == null) {
    console.log(`bad route "${a}": expected SOCKET=HOST:PORT`)
    process.exit(2)
  }
  return { socket: m[1], host: m[2], port: Number(m[3]) }
})

function forward (client: Socket, host: string, port: number): void {
  const upstream = connect(port, host)
  const close = (): void => { client.destroy(); upstream.destroy() }
  client.on('error', close)
  upstream.on('error', close)
  client.on('close', close)
  upstream.on('close', close)
  client.pipe(upstream)
  upstream.pipe(client)
}

await Promise.all(routes.map(async r => {
  const server = createServer(client => { forward(client, r.host, r.port) })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(r.socket, resolve)
  })
}))
console.log('ready')
process.stdin.on('end', () => { process.exit(0) })
process.stdin.on('error', () => { process.exit(0) })
process.stdin.resume()
