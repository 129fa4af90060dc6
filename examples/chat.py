"""A chat room on a gossipsub topic, on one page: the gossipsub API an application uses.

    python examples/chat.py --nick alice                          # prints the address to join it at
    python examples/chat.py --nick bob --connect <that address>   # in a second terminal, and a third...

With no --connect the chat finds its peers on the local network by mDNS (and listens on every
interface, so that they can reach it): two chats on one LAN meet with no address typed.

Each typed line is published as plain UTF-8 text, "nick: text": what the js-libp2p and go-libp2p chat
peers (libp2p/universal-connectivity) publish and print, so they can share the room. Each received
message is printed with the end of its author's peer id, which the message's signature proves (a
nickname is only a claim). Ctrl-D or Ctrl-C leaves. `mycel chat` is the same with a few extras
(/peers, remembered nicknames, safer printing): see mycel/cli/chat.py.
"""

from __future__ import annotations

import argparse
import sys

import trio

from mycel import MDNS, Host, HostConfig, Identify, Ping, open_host
from mycel.protocols.pubsub import Gossipsub, PeerJoinedTopic, PeerLeftTopic, PublishError, Subscription


def printable(text: str) -> str:
    """What a peer sent, unable to move the cursor or clear the screen: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


async def show_messages(sub: Subscription) -> None:
    async for msg in sub:
        who = str(msg.source)[-8:]
        print(f"<{who}> {printable(msg.data.decode('utf-8', 'replace'))}", flush=True)


async def show_members(host: Host, topic: str) -> None:
    with host.subscribe() as events:
        async for event in events:
            if isinstance(event, PeerJoinedTopic | PeerLeftTopic) and event.topic == topic:
                verb = "joined" if isinstance(event, PeerJoinedTopic) else "left"
                print(f"* {str(event.peer)[-8:]} {verb} {topic}", flush=True)


async def main(nick: str, topic: str, listen: str | None, connect: list[str]) -> None:
    # no address given: look for peers on the LAN by mDNS, listening where they can reach us
    discovery = [] if connect else [MDNS()]
    listen = listen or ("/ip4/127.0.0.1/tcp/0" if connect else "/ip4/0.0.0.0/tcp/0")
    config = HostConfig(services=[Identify(), Ping(), Gossipsub(), *discovery], listen=[listen])
    async with open_host(config) as host, trio.open_nursery() as nursery:
        pubsub = host.service(Gossipsub)
        nursery.start_soon(show_members, host, topic)
        async with pubsub.subscribe(topic) as sub:
            nursery.start_soon(show_messages, sub)
            print(f"* {nick} ({host.peer_id}) in {topic}; listening on {host.addrs[0]}", flush=True)
            for addr in connect:
                await host.connect(addr)
            if connect:
                await pubsub.wait_ready(topic, min_peers=1, timeout=10)
            while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
                if not line.strip():
                    continue
                try:
                    await pubsub.publish(topic, f"{nick}: {line.rstrip()}".encode())
                except PublishError:
                    print("* no one is listening yet: not sent", flush=True)
            await pubsub.flush(timeout=2)  # publish() only queues: let the last line leave
        print("* bye", flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a gossipsub chat room")
    parser.add_argument("--nick", default="anon", help="your nickname")
    parser.add_argument("--topic", default="chat", help="the room")
    parser.add_argument("--listen", help="where to listen (default: 127.0.0.1 with --connect, else 0.0.0.0)")
    parser.add_argument("--connect", action="append", default=[], help="a peer's /ip4/.../p2p/... address")
    args = parser.parse_args()
    try:
        trio.run(main, args.nick, args.topic, args.listen, args.connect)
    except KeyboardInterrupt:
        print("* bye")
