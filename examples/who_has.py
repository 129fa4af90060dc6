"""Who has this file? Content routing through the Kademlia DHT, on one page.

    python examples/who_has.py FILE

Three nodes in one process, on 127.0.0.1:
  C  a bootstrap DHT server; the others know only its address;
  A  has FILE: it announces the file's CID in the DHT (provide) and serves the file over a
     protocol of its own, /who-has/file/1.0.0 (request: the multihash; response: the bytes, each one
     length-prefixed message);
  B  knows the CID and C, nothing about A: it asks the DHT who provides the CID, connects to the
     provider by peer id alone, fetches the file and checks its hash.
`mycel dht provide` / `mycel dht find-providers` do the DHT half of this from the command line.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import trio
from multiformats import CID

from mycel import Host, HostConfig, Identify, KadDHT, StreamHandler, open_host, receive_message, send_message
from mycel.core.abc import MuxedStream
from mycel.protocols.kad import RoutingTablePeerAdded

PROTOCOL = "/who-has/file/1.0.0"
MAX_FILE = 16 * 1024 * 1024  # one message carries the whole file: keep it small
LISTEN = "/ip4/127.0.0.1/tcp/0"


def file_cid(data: bytes) -> CID:
    """The file's CIDv1 (raw codec, sha2-256), built by the multiformats package."""
    return CID("base32", 1, "raw", ("sha2-256", hashlib.sha256(data).digest()))


def say(node: str, text: str) -> None:
    print(f"[{node}] {text}", flush=True)


async def join(host: Host, bootstrap: Host) -> None:
    """Connect to the bootstrap node and wait until it is in our routing table (identify tells us it
    serves the DHT, a trivial query checks it), then look ourselves up to meet its neighbours."""
    dht = host.service(KadDHT)
    with host.subscribe() as events:
        await host.connect(bootstrap.peer_id, bootstrap.addrs)
        with trio.fail_after(10):
            while not len(dht.routing_table):
                event = await events.receive()
                if isinstance(event, RoutingTablePeerAdded):
                    break
    await dht.closest_peers(host.peer_id.to_bytes())


def file_server(files: dict[bytes, bytes]) -> StreamHandler:
    """The /who-has/file/1.0.0 handler: a multihash in, the file with that hash out (nothing if unknown)."""

    async def serve(stream: MuxedStream) -> None:
        wanted = await receive_message(stream, 64)
        data = files.get(wanted or b"")
        await send_message(stream, data if data is not None else b"")  # empty: "not here"

    return serve


async def main(path: Path) -> int:
    data = path.read_bytes()
    if len(data) > MAX_FILE:
        print(f"{path} is bigger than {MAX_FILE} bytes: this example sends a file in one message", file=sys.stderr)
        return 1
    cid = file_cid(data)
    key = bytes(cid.digest)  # the multihash: what providers are keyed by, and what our protocol asks for

    def config() -> HostConfig:
        return HostConfig(services=[Identify(), KadDHT()], listen=[LISTEN])

    async with open_host(config()) as c, open_host(config()) as a, open_host(config()) as b:
        say("C", f"bootstrap DHT server {c.peer_id} at {c.addrs[0]}")

        say("A", f"has {path.name}: {len(data)} bytes, CID {cid}")
        a.set_stream_handler(PROTOCOL, file_server({key: data}))
        await join(a, c)
        await a.service(KadDHT).provide(cid)
        say("A", f"announced in the DHT that {a.peer_id} provides {cid}")

        await join(b, c)
        table = b.service(KadDHT).routing_table
        say("B", f"joined the DHT through C; {len(table)} peers in its routing table after a self-lookup")
        providers = [rec.peer async for rec in b.service(KadDHT).find_providers(cid, limit=1)]
        if not providers:
            say("B", "nobody provides that hash")
            return 1
        provider = providers[0]
        say("B", f"the DHT says {provider} has it")

        conn = await b.connect(provider)  # by peer id alone: the host asks the DHT for its addresses
        say("B", f"connection to {str(provider)[-8:]} at {conn.remote_addr}")
        stream = await b.new_stream(provider, PROTOCOL)
        try:
            await send_message(stream, key)
            got = await receive_message(stream, MAX_FILE)
        finally:
            await stream.aclose()
        if not got or file_cid(got) != cid:
            say("B", f"got {len(got or b'')} bytes whose hash does not match: not the file")
            return 1
        say("B", f"fetched {len(got)} bytes from {str(provider)[-8:]}; sha2-256 matches: it is {path.name}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python examples/who_has.py FILE", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(trio.run(main, Path(sys.argv[1])))
