// js-libp2p AutoNAT v1 peers (@libp2p/autonat) for tests/interop/test_autonat_js.py. Pinned Node 22,
// TCP + Noise + yamux on 127.0.0.1 only:
//   node autonat.mjs serve                         an AutoNAT v1 server (and client, as js always is)
//   node autonat.mjs ask <maddr>/p2p/<S> <addr>   take <addr> as an observed address of ours, dial S: js's
//                                                 AutoNAT asks S to verify it as soon as identify ends
// js verifies (and serves) public addresses only: its server refuses loopback ones (E_DIAL_REFUSED) and its
// client asks about non-private unverified addresses only, so the test gives it a documentation multicast
// address (233.252.0.0/24, MCAST-TEST-NET) that js counts as public and nothing can dial over TCP.
// Contract: one JSON line on stdout when ready ({peer_id, addrs}), logs on stderr; runs until stdin closes.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { autoNAT } from '@libp2p/autonat'
import { multiaddr } from '@multiformats/multiaddr'

function log (...args) {
  console.error(new Date().toISOString(), 'js-autonat', ...args)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function untilStdinCloses () {
  return new Promise((resolve) => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.on('error', resolve)
    process.stdin.resume()
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  })
}

const base = {
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 1000 }
}

async function runServe () {
  const node = await createLibp2p({
    ...base,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    services: { identify: identify(), autonat: autoNAT({ startupDelay: 0 }) }
  })
  const addrs = node.getMultiaddrs().map(String).filter(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  emit({ peer_id: node.peerId.toString(), addrs })
  log(`autonat server ${node.peerId} on ${addrs.join(' ')}`)
  await untilStdinCloses()
  await node.stop()
}

async function runAsk (target, announce) {
  const node = await createLibp2p({
    ...base,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    services: { identify: identify(), autonat: autoNAT({ startupDelay: 0 }) }
  })
  // an *observed* address is what js asks peers to verify (announced ones count as verified already);
  // the address manager is internal to js-libp2p, reached through the node's components
  node.components.addressManager.addObservedAddr(multiaddr(announce))
  const conn = await node.dial(multiaddr(target))
  emit({ peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String), remote: conn.remoteAddr.toString() })
  log(`asking ${conn.remotePeer} to verify ${announce}`)
  await untilStdinCloses()
  await node.stop()
}

const [mode, ...rest] = process.argv.slice(2)
try {
  if (mode === 'serve') await runServe()
  else if (mode === 'ask' && rest.length === 2) await runAsk(rest[0], rest[1])
  else throw new Error('usage: autonat.mjs serve | ask <maddr> <announce maddr>')
} catch (err) {
  log(`${err.name}: ${err.message}`)
  process.exitCode = 1
}
process.exit()
