// The stdin command loop shared by the js peers that follow a JSON command contract (pubsub.mjs, dht.mjs;
// see interop/pubsub_contract.py and interop/dht_contract.py): one JSON object per stdin line, run
// concurrently, each answered with {"reply": id, "ok": true, ...fields} or {"reply": id, "ok": false,
// "error"}. An `Unsupported` error answers "unsupported: <reason>".

import { createInterface } from 'node:readline'

export class Unsupported extends Error {}

export function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Answer commands (name -> async (cmd) => reply fields) until stdin closes or SIGTERM/SIGINT arrives.
export async function serveCommands (commands, log) {
  const answer = async (line) => {
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch {
      cmd = null
    }
    if (cmd == null || typeof cmd !== 'object' || Array.isArray(cmd)) {
      emit({ reply: null, ok: false, error: `not a JSON object: ${line.slice(0, 200)}` })
      return
    }
    const fn = Object.hasOwn(commands, cmd.cmd) ? commands[cmd.cmd] : null
    try {
      if (fn == null) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`)
      emit({ reply: cmd.id, ok: true, ...await fn(cmd) })
    } catch (err) {
      const error = err instanceof Unsupported ? `unsupported: ${err.message}` : `${err.name}: ${err.message}`
      log(`command ${cmd.cmd} failed: ${error}`)
      emit({ reply: cmd.id, ok: false, error })
    }
  }

  await new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
    lines.on('line', (line) => { if (line.trim() !== '') answer(line) })
    lines.on('close', resolve)
    process.stdin.on('error', resolve)
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  })
}
