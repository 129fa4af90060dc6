// js-libp2p 3.x pubsub interop peer for mycel. Run with the pinned Node 22:
//   interop/js/node_modules/node/bin/node interop/js/pubsub.mjs pubsub --router gossipsub|floodsub [--ip 127.0.0.1]
// The contract (same as interop/py/pubsub_peer.py and interop/go_pubsub.py; see interop/pubsub_contract.py
// and the README's "Pubsub" section): TCP + Noise + yamux on 127.0.0.1, one ready line
// {"peer_id", "addrs", "protocols"}, then JSON commands on stdin (connect, subscribe, publish, peers,
// mesh), one reply line each, and {"event": "message", ...} lines. Exit on stdin EOF or SIGTERM.
//
// Routers: @libp2p/gossipsub 17.1.1 and @libp2p/floodsub 11.0.28, all options at their defaults
// (emitSelf false, StrictSign, gossipsub D=6/4/12, 1 s heartbeat, fallbackToFloodsub: it also serves
// /floodsub/1.0.0, floodPublish, allowPublishToZeroTopicPeers false: a publish before any peer is known
// on the topic fails with NoPeersSubscribedToTopic, and the harness retries it). The libp2p node is
// configured as in peer.mjs: no inbound connection rate limit, no connection monitor pings.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { floodsub } from '@libp2p/floodsub'
import { multiaddr } from '@multiformats/multiaddr'
import { Unsupported, emit, serveCommands } from './commands.mjs'

const EXIT_UNSUPPORTED = 3
const PUBSUB_PROTOCOL = /^\/(meshsub|floodsub)\//

function log (...args) {
  console.error(new Date().toISOString(), 'js-pubsub', ...args)
}

function parseArgs (argv) {
  const [mode, ...rest] = argv
  if (mode !== 'pubsub') throw new Error('usage: pubsub.mjs pubsub --router gossipsub|floodsub [--ip IP]')
  const opts = { router: undefined, ip: '127.0.0.1' }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '--router') opts.router = rest[++i]
    else if (a === '--ip') opts.ip = rest[++i]
    else throw new Error(`unknown argument ${a}`)
  }
  if (opts.router !== 'gossipsub' && opts.router !== 'floodsub') throw new Error('--router gossipsub|floodsub is required')
  return opts
}

const hex = (bytes) => Buffer.from(bytes).toString('hex')
const seqnoHex = (n) => (typeof n === 'bigint' ? n.toString(16).padStart(16, '0') : null)

async function main () {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (err) {
    console.error(err.message)
    process.exit(2)
  }
  if (opts.ip !== '127.0.0.1') {
    emit({ unsupported: 'interop peers stay on 127.0.0.1' })
    process.exit(EXIT_UNSUPPORTED)
  }
  const node = await createLibp2p({
    addresses: { listen: [`/ip4/${opts.ip}/tcp/0`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(), // the pubsub routers learn a peer's protocols from identify
      pubsub: opts.router === 'gossipsub' ? gossipsub() : floodsub()
    },
    connectionManager: { inboundConnectionThreshold: 1e9 },
    connectionMonitor: { enabled: false }
  })
  const pubsub = node.services.pubsub
  const me = node.peerId

  // received_from: gossipsub says who propagated a message ('gossipsub:message'); floodsub's 'message'
  // event does not, so we note the forwarding peer of each message object as processMessage sees it.
  const forwarders = new WeakMap()
  const onMessage = (msg, propagationSource) => {
    const from = msg.type === 'signed' ? msg.from : null
    if (from != null && from.equals(me)) return
    emit({
      event: 'message',
      topic: msg.topic,
      data: hex(msg.data),
      from: from != null ? from.toString() : null,
      seqno: msg.type === 'signed' ? seqnoHex(msg.sequenceNumber) : null,
      received_from: propagationSource != null ? propagationSource.toString() : null
    })
  }
  if (opts.router === 'gossipsub') {
    pubsub.addEventListener('gossipsub:message', (evt) => onMessage(evt.detail.msg, evt.detail.propagationSource))
  } else {
    const processMessage = pubsub.processMessage
    pubsub.processMessage = function (from, msg) {
      forwarders.set(msg, from)
      return processMessage.call(this, from, msg)
    }
    // floodsub drops an invalid message with a debug line only: say why on stderr (README: the seqno quirk)
    const validate = pubsub.validate
    pubsub.validate = async function (from, msg) {
      try {
        return await validate.call(this, from, msg)
      } catch (err) {
        // what floodsub signs over in place of the seqno it received: the BigInt's minimal bytes
        let seqno = msg.type === 'signed' ? msg.sequenceNumber.toString(16) : ''
        if (seqno.length % 2 !== 0) seqno = `0${seqno}`
        log(`floodsub rejected a message from ${from} (author ${msg.from}, seqno re-encoded for the signature check: ${seqno}): ${err.name}: ${err.message}`)
        throw err
      }
    }
    pubsub.addEventListener('message', (evt) => onMessage(evt.detail, forwarders.get(evt.detail)))
  }

  const commands = {
    async connect ({ addr }) {
      await node.dial(multiaddr(addr))
      return {}
    },
    async subscribe ({ topic }) {
      pubsub.subscribe(topic)
      return {}
    },
    async publish ({ topic, data }) {
      const result = await pubsub.publish(topic, Buffer.from(data, 'hex'))
      return { recipients: result.recipients.map((p) => p.toString()) }
    },
    async peers ({ topic }) {
      const peers = pubsub.getSubscribers(topic).map((p) => p.toString()).sort()
      // the protocol of our outbound stream to each peer (floodsub speaks nothing else)
      const protocolOf = (id) => opts.router === 'gossipsub' ? pubsub.streamsOutbound?.get(id)?.protocol : '/floodsub/1.0.0'
      const protocols = Object.fromEntries(peers.map((id) => [id, protocolOf(id)]).filter(([, p]) => p != null))
      return { peers, protocols }
    },
    async mesh ({ topic }) {
      if (typeof pubsub.getMeshPeers !== 'function') throw new Unsupported('floodsub has no mesh')
      return { peers: pubsub.getMeshPeers(topic).map((p) => p.toString()).sort() }
    }
  }

  const peerId = me.toString()
  const addrs = node.getMultiaddrs().map((a) => a.toString()).filter((a) => a.startsWith(`/ip4/${opts.ip}/tcp/`))
  const protocols = node.getProtocols().filter((p) => PUBSUB_PROTOCOL.test(p))
  emit({ peer_id: peerId, addrs, protocols })
  log(`${opts.router} peer ${peerId} on ${addrs.join(' ')} serving ${protocols.join(' ')}`)

  await serveCommands(commands, log)
  log('shutting down')
  await node.stop()
  process.exit(0)
}

main().catch((err) => {
  log('fatal:', err)
  process.exit(1)
})
