// js-libp2p gossipsub benchmark peer: the contract of mycel_pubsub.py (see its docstring), driven by
// benchmarks/pubsub.py:
//   node js_pubsub.mjs [--idontwant-threshold N] [--no-sign]
// One libp2p 3.3 node on 127.0.0.1 (TCP + Noise + yamux, identify, @libp2p/gossipsub 17.1.1 with its
// defaults as interop/js/pubsub.mjs runs it: StrictSign; --no-sign: globalSignaturePolicy StrictNoSign and
// msgIdFn = SHA-256 of the data, as mycel_pubsub.py --no-sign), a ready line {"peer_id", "addrs", "pid"}, then JSON
// commands on stdin (connect, subscribe, wait, publish, stats, reset, idontwant), one reply line each.
// Duplicates are counted by wrapping the router's validateReceivedMessage (its verdict "duplicate");
// js-libp2p's gossipsub has no drop counter: its outbound streams buffer without bound.
// Run with the pinned Node 22 (interop/js/node_modules/node/bin/node); packages come from
// interop/js/node_modules (MYCEL_JS_DIR overrides) through a resolve hook, as in js_peer.mjs.

import { register } from 'node:module'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { dirname, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'

const HERE = dirname(fileURLToPath(import.meta.url))
const JS_DIR = process.env.MYCEL_JS_DIR ?? resolve(HERE, '..', '..', 'interop', 'js')
const ANCHOR = pathToFileURL(resolve(JS_DIR, 'peer.mjs')).href
register('data:text/javascript,' + encodeURIComponent(`
export async function resolve (specifier, context, next) {
  if (context.parentURL === ${JSON.stringify(import.meta.url)} && !/^(\\.|\\/|[a-z]+:)/.test(specifier)) {
    return next(specifier, { ...context, parentURL: ${JSON.stringify(ANCHOR)} })
  }
  return next(specifier, context)
}`))

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { gossipsub } = await import('@libp2p/gossipsub')
const { multiaddr } = await import('@multiformats/multiaddr')

const HEADER = 16 // u64 LE publish wall clock (µs), u32 LE publisher index, u32 LE sequence number
const MAX_RECEIPTS = 200_000

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const wallUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000)
const cpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function parseArgs (argv) {
  const opts = { idontwantThreshold: undefined, noSign: false }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--idontwant-threshold') opts.idontwantThreshold = Number(argv[++i])
    else if (argv[i] === '--no-sign') opts.noSign = true
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  return opts
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const pubsubOptions = opts.idontwantThreshold != null ? { idontwantMinDataSize: opts.idontwantThreshold } : {}
  if (opts.noSign) {
    // the id mycel's content_hash_message_id computes (the router's own StrictNoSign default is the same
    // digest, awaited through multiformats); payloads are unique, so ids are too
    pubsubOptions.globalSignaturePolicy = 'StrictNoSign'
    pubsubOptions.msgIdFn = (msg) => {
      const digest = createHash('sha256').update(msg.data).digest()
      return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength)
    }
  }
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub(pubsubOptions) },
    connectionManager: { inboundConnectionThreshold: 1e9 },
    connectionMonitor: { enabled: false }
  })
  const pubsub = node.services.pubsub
  const receivers = new Map() // topic -> { keep, received, first_us, last_us, receipts }
  let duplicates = 0

  const validate = pubsub.validateReceivedMessage.bind(pubsub)
  pubsub.validateReceivedMessage = async (from, rpcMsg) => {
    const result = await validate(from, rpcMsg)
    if (result.code === 'duplicate') duplicates++
    return result
  }
  pubsub.addEventListener('gossipsub:message', (evt) => {
    const now = wallUs()
    const msg = evt.detail.msg
    const r = receivers.get(msg.topic)
    if (r == null) return
    r.received++
    if (r.first_us == null) r.first_us = now
    r.last_us = now
    if (r.keep && r.receipts.length < MAX_RECEIPTS && msg.data.byteLength >= HEADER) {
      const view = new DataView(msg.data.buffer, msg.data.byteOffset, HEADER)
      r.receipts.push([view.getUint32(8, true), view.getUint32(12, true), Number(view.getBigUint64(0, true)), now])
    }
  })

  const commands = {
    async connect ({ addr }) {
      await node.dial(multiaddr(addr))
      return {}
    },
    async subscribe ({ topic, keep = false }) {
      if (!receivers.has(topic)) {
        receivers.set(topic, { keep, received: 0, first_us: null, last_us: null, receipts: [] })
        pubsub.subscribe(topic)
      }
      return {}
    },
    async wait ({ topic, peers, within = 30 }) {
      const deadline = performance.now() + within * 1000
      const dlo = pubsub.opts.Dlo
      while (true) {
        const known = pubsub.getSubscribers(topic).length
        const mesh = receivers.has(topic) ? pubsub.getMeshPeers(topic).length : known
        if (known >= peers && mesh >= Math.min(peers, dlo)) return { peers: known, mesh }
        if (performance.now() > deadline) throw new Error(`timeout: ${known} topic peers, mesh ${mesh}`)
        await sleep(50)
      }
    },
    async publish ({ topic, size, count, index = 0, first_seq: firstSeq = 0 }) {
      const buf = new Uint8Array(Math.max(size, HEADER))
      const view = new DataView(buf.buffer)
      let published = 0
      let failed = 0
      const startUs = wallUs()
      const c0 = cpuSeconds()
      const t0 = performance.now()
      for (let seq = firstSeq; seq < firstSeq + count; seq++) {
        view.setBigUint64(0, BigInt(wallUs()), true)
        view.setUint32(8, index, true)
        view.setUint32(12, seq, true)
        try {
          await pubsub.publish(topic, buf.slice()) // a copy: the router keeps a reference
          published++
        } catch {
          failed++
        }
      }
      return { published, failed, start_us: startUs, seconds: (performance.now() - t0) / 1000, cpu: cpuSeconds() - c0 }
    },
    async stats ({ topic, receipts = true }) {
      const r = receivers.get(topic)
      const out = {
        received: r?.received ?? 0,
        first_us: r?.first_us ?? null,
        last_us: r?.last_us ?? null,
        duplicates,
        dropped_sub: 0,
        dropped_peers: 0,
        cpu: cpuSeconds(),
        peers: pubsub.getSubscribers(topic).length,
        mesh: r != null ? pubsub.getMeshPeers(topic).length : 0
      }
      if (r?.keep && receipts) out.receipts = r.receipts
      return out
    },
    async reset () {
      for (const r of receivers.values()) Object.assign(r, { received: 0, first_us: null, last_us: null, receipts: [] })
      return {}
    },
    async idontwant ({ threshold }) {
      pubsub.opts.idontwantMinDataSize = threshold
      return {}
    }
  }

  const answer = async (line) => {
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch {
      emit({ reply: null, ok: false, error: 'bad command: not JSON' })
      return
    }
    const { id, cmd: name, ...params } = cmd
    try {
      const fn = Object.hasOwn(commands, name) ? commands[name] : null
      if (fn == null) throw new Error(`unknown command ${JSON.stringify(name)}`)
      emit({ reply: id, ok: true, ...await fn(params) })
    } catch (err) {
      emit({ reply: id, ok: false, error: `${err.name}: ${err.message}` })
    }
  }

  const addrs = node.getMultiaddrs().map(String).filter((a) => a.startsWith('/ip4/127.0.0.1/tcp/'))
  emit({ peer_id: node.peerId.toString(), addrs, pid: process.pid })
  await new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
    lines.on('line', (line) => { if (line.trim() !== '') answer(line) })
    lines.on('close', resolve)
    process.stdin.on('error', resolve)
    process.on('SIGTERM', resolve)
  })
  await node.stop()
  process.exit(0)
}

main().catch((err) => {
  console.error('js_pubsub fatal:', err)
  process.exit(1)
})
