// js-libp2p 3.x Kademlia DHT interop peer for mycel. Run with the pinned Node 22:
//   interop/js/node_modules/node/bin/node interop/js/dht.mjs dht --mode server|client [--ip 127.0.0.1]
// The contract (same as interop/py/dht_peer.py and interop/go_dht.py; see interop/dht_contract.py and the
// README's "DHT" section): TCP + Noise + yamux on 127.0.0.1, one ready line {"peer_id", "addrs",
// "protocols", "mode"}, then JSON commands on stdin (connect, pk_record, put, get, provide,
// find_providers, find_peer, closest, routing_table), one reply line each. Exit on stdin EOF or SIGTERM.
//
// @libp2p/kad-dht 16.4.5 with its defaults (protocol /ipfs/kad/1.0.0, k = 20, α = 10, validators and
// selectors for /pk/ only: any other namespace is refused), except:
//   clientMode: false for --mode server (its default is true: client until AutoNAT says the node is
//     public, which never happens on loopback);
//   peerInfoMapper: passthroughMapper (the default, removePrivateAddressesMapper, drops every 127.0.0.1
//     address from what the DHT stores and answers, so on loopback no peer could be found or dialed).
// The libp2p node is configured as in peer.mjs (no inbound connection rate limit, no connection monitor).
// kad-dht needs the ping service (it pings old routing-table contacts).

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, EventTypes } from '@libp2p/kad-dht'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { Unsupported, emit, serveCommands } from './commands.mjs'

const EXIT_UNSUPPORTED = 3
const KAD_PROTOCOL = /^\/ipfs\/kad\//
const QUERY_TIMEOUT_MS = 30_000

function log (...args) {
  console.error(new Date().toISOString(), 'js-dht', ...args)
}

function parseArgs (argv) {
  const [command, ...rest] = argv
  if (command !== 'dht') throw new Error('usage: dht.mjs dht --mode server|client [--ip IP]')
  const opts = { mode: undefined, ip: '127.0.0.1' }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '--mode') opts.mode = rest[++i]
    else if (a === '--ip') opts.ip = rest[++i]
    else throw new Error(`unknown argument ${a}`)
  }
  if (opts.mode !== 'server' && opts.mode !== 'client') throw new Error('--mode server|client is required')
  return opts
}

const hex = (bytes) => Buffer.from(bytes).toString('hex')
const fromHex = (text) => new Uint8Array(Buffer.from(text, 'hex'))

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
      identify: identify(), // the DHT admits a peer to its table once identify shows it serves kad
      ping: ping(),
      dht: kadDHT({ clientMode: opts.mode === 'client', peerInfoMapper: passthroughMapper })
    },
    connectionManager: { inboundConnectionThreshold: 1e9 },
    connectionMonitor: { enabled: false }
  })
  const dht = node.services.dht

  // run a query to its end; the events, and the last error a peer answered with (for the reply)
  const query = async (events) => {
    const out = []
    for await (const event of events) out.push(event)
    return out
  }
  const signal = () => AbortSignal.timeout(QUERY_TIMEOUT_MS)
  const parseCid = (text) => {
    try {
      return CID.parse(text)
    } catch (err) {
      throw new Error(`not a CID: ${JSON.stringify(text)} (${err.message})`)
    }
  }

  const commands = {
    async connect ({ addr }) {
      await node.dial(multiaddr(addr))
      return {}
    },
    async pk_record () {
      const key = await generateKeyPair('RSA', 2048)
      const mh = peerIdFromPublicKey(key.publicKey).toMultihash().bytes
      const k = new Uint8Array([...Buffer.from('/pk/'), ...mh])
      return { key_hex: hex(k), value_hex: hex(publicKeyToProtobuf(key.publicKey)) }
    },
    async put ({ key_hex: keyHex, value_hex: valueHex }) {
      const events = await query(dht.put(fromHex(keyHex), fromHex(valueHex), { signal: signal() }))
      // PEER_RESPONSE to a PUT_VALUE: a peer echoed the record (stored it)
      const stored = events.filter((e) => e.name === 'PEER_RESPONSE' && e.record != null)
      return { stored_at: [...new Set(stored.map((e) => e.from.toString()))].sort() }
    },
    async get ({ key_hex: keyHex }) {
      const events = await query(dht.get(fromHex(keyHex), { signal: signal() }))
      const values = events.filter((e) => e.type === EventTypes.VALUE)
      if (values.length === 0) {
        const errors = events.filter((e) => e.type === EventTypes.QUERY_ERROR).map((e) => e.error?.message)
        throw new Error(`not found (query errors: ${JSON.stringify(errors.slice(-3))})`)
      }
      return { value_hex: hex(values[values.length - 1].value) } // the last VALUE is the selected best
    },
    async provide ({ cid }) {
      await query(dht.provide(parseCid(cid), { signal: signal() }))
      return {}
    },
    async find_providers ({ cid, count }) {
      const providers = new Set()
      for await (const event of dht.findProviders(parseCid(cid), { signal: signal() })) {
        if (event.type !== EventTypes.PROVIDER) continue
        for (const p of event.providers) providers.add(p.id.toString())
        if (providers.size >= (count ?? 20)) break
      }
      return { providers: [...providers] }
    },
    async find_peer ({ peer_id: peerId }) {
      const target = peerIdFromString(peerId)
      for await (const event of dht.findPeer(target, { signal: signal() })) {
        if (event.type === EventTypes.FINAL_PEER && event.peer.id.equals(target)) {
          return { addrs: event.peer.multiaddrs.map((a) => a.toString()) }
        }
      }
      throw new Error(`${peerId} not found`)
    },
    async closest ({ key_hex: keyHex }) {
      const peers = []
      for await (const event of dht.getClosestPeers(fromHex(keyHex), { signal: signal() })) {
        if (event.type === EventTypes.FINAL_PEER) peers.push(event.peer.id.toString())
      }
      return { peers }
    },
    async routing_table () {
      const table = dht.routingTable ?? dht.wan?.routingTable
      if (table?.kb == null) throw new Unsupported('no routing table on this kad-dht object')
      const peers = []
      for (const contact of table.kb.toIterable()) peers.push(contact.peerId.toString())
      return { peers }
    }
  }

  const peerId = node.peerId.toString()
  const addrs = node.getMultiaddrs().map((a) => a.toString()).filter((a) => a.startsWith(`/ip4/${opts.ip}/tcp/`))
  const protocols = node.getProtocols().filter((p) => KAD_PROTOCOL.test(p))
  emit({ peer_id: peerId, addrs, protocols, mode: dht.getMode() })
  log(`dht ${dht.getMode()} ${peerId} on ${addrs.join(' ')} serving ${protocols.join(' ')}`)

  await serveCommands(commands, log)
  log('shutting down')
  await node.stop()
  process.exit(0)
}

main().catch((err) => {
  log('fatal:', err)
  process.exit(1)
})
