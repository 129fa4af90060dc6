// js-libp2p 3.x with @libp2p/mdns, for mycel's mDNS interop test (tests/interop/test_mdns_js.py), run
// inside a network namespace with the pinned Node 22:
//   interop/js/node_modules/node/bin/node interop/js/mdns-peer.mjs [--interval MS] [--dial]
// Listens on TCP 0.0.0.0 (Noise, yamux, identify), discovers by mDNS and prints one JSON object a line:
//   {"event": "ready", "peer", "addrs", "mdns_addrs"}   mdns_addrs: what @libp2p/mdns announces (private ones)
//   {"event": "found", "peer", "addrs"}                 every peer @libp2p/mdns reports, addresses parsed
//   {"event": "connected" | "disconnected", "peer"}
// --dial: also dial each peer it discovers (js-libp2p 3 does not dial discovered peers by itself).
// "found" comes from the mdns service's own 'peer' events: libp2p's 'peer:discovery' fires only for a peer
// new to the peer store, so it stays silent when the peer connected (and identified itself) first.
// SIGTERM / SIGINT stop the node and exit 0 after {"event": "closed"}.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'
import { isPrivate } from '@libp2p/utils'

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function parseArgs (argv) {
  const opts = { interval: 10000, dial: false }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--interval') opts.interval = Number(argv[++i])
    else if (argv[i] === '--dial') opts.dial = true
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const node = await createLibp2p({
  addresses: { listen: ['/ip4/0.0.0.0/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), mdns: mdns({ interval: opts.interval }) }
})

node.services.mdns.addEventListener('peer', (evt) => {
  const { id, multiaddrs } = evt.detail
  emit({ event: 'found', peer: id.toString(), addrs: multiaddrs.map((a) => a.toString()) })
  if (opts.dial) {
    node.dial(id).catch((err) => console.error('dial failed', id.toString(), err.message))
  }
})
node.addEventListener('peer:connect', (evt) => emit({ event: 'connected', peer: evt.detail.toString() }))
node.addEventListener('peer:disconnect', (evt) => emit({ event: 'disconnected', peer: evt.detail.toString() }))

await node.start()
const addrs = node.getMultiaddrs().map((a) => a.toString())
emit({
  event: 'ready',
  peer: node.peerId.toString(),
  addrs,
  mdns_addrs: node.getMultiaddrs().filter((a) => isPrivate(a)).map((a) => a.toString())
})

let stopping = false
async function stop () {
  if (stopping) return
  stopping = true
  await node.stop()
  emit({ event: 'closed' })
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
