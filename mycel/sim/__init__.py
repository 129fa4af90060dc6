"""mycel.sim: many hosts in one process on a simulated network, on virtual time, reproducible from a seed.

```python
import trio, trio.testing
from mycel.sim import SimNetwork, Regions, sim_hosts

async def main():
    net = SimNetwork(seed=1, latency=Regions())
    async with sim_hosts(net, 50, services=lambda i: [Identify(), Gossipsub()]) as hosts:
        ...                                   # the real host, router and DHT code; the network is modelled

trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))   # virtual time: minutes in seconds
```

:mod:`mycel.sim.network` says what is modelled (latency, bandwidth, loss, partitions, churn) and what is real.
"""

from mycel.sim.hosts import connect_random, sim_config, sim_hosts
from mycel.sim.latency import MBIT, REGION_WEIGHTS, LatencyModel, Regions, Uniform, region_latency
from mycel.sim.network import SimConnection, SimNetwork, SimNode, SimTransport

__all__ = [
    "MBIT",
    "REGION_WEIGHTS",
    "LatencyModel",
    "Regions",
    "SimConnection",
    "SimNetwork",
    "SimNode",
    "SimTransport",
    "Uniform",
    "connect_random",
    "region_latency",
    "sim_config",
    "sim_hosts",
]
