"""Protocols that run as services in a host: identify (+ push), ping, echo, perf, gossipsub/floodsub, the Kademlia DHT,
rendezvous."""

from mycel.protocols.echo import Echo
from mycel.protocols.identify import Identify, IdentifyResult
from mycel.protocols.perf import Perf
from mycel.protocols.kad import KadDHT
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Floodsub, Gossipsub, GossipsubConfig
from mycel.protocols.rendezvous import Rendezvous

__all__ = ["Echo", "Floodsub", "Gossipsub", "GossipsubConfig", "Identify", "IdentifyResult", "KadDHT", "Perf", "Ping", "Rendezvous"]
