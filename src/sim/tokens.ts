/**
 * Identities for the harness's callers. Its agents share one HTTPS client's
 * connections, so each proves who it is with a bearer token of its own (a
 * worker token for its worker id), signed by a key the harness makes for
 * the run; the controllers trust its public key (`--token-key`). The
 * recorder, which reads every controller's state, calls as an operator.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SignJWT } from 'jose'

export interface TokenIssuer {
  /** The PEM file of the public key controllers verify tokens with. */
  keyFile: string
  /** A token for `spiffe://<trust domain>/<role>/<name>`, valid for a day. */
  sign: (role: 'worker' | 'client' | 'operator', name: string) => Promise<string>
}

export function tokenIssuer (dir: string): TokenIssuer {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const keyFile = join(dir, 'harness-token-key.pem')
  writeFileSync(keyFile, publicKey.export({ type: 'spki', format: 'pem' }))
  return { keyFile, sign: async (role, name) => await sign(privateKey, role, name) }
}

async function sign (key: KeyObject, role: string, name: string): Promise<string> {
  return await new SignJWT({ role }).setProtectedHeader({ alg: 'EdDSA' }).setSubject(name).setIssuedAt().setExpirationTime('1d').sign(key)
}
