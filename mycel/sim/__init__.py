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

Scenarios: :mod:`mycel.sim.script` reads test-plans' gossipsub-interop ``params.json`` scripts (and builds
their ``subnet-blob-msg`` / ``simple-fanout``), :mod:`mycel.sim.runner` runs one on N hosts and
:mod:`mycel.sim.interop_log` writes and analyses their JSON log lines; :mod:`mycel.sim.attacks` has Sybil
personas (bad boy, covert flash) and the v1.1 evaluation's attack scenario; ``python -m mycel.sim`` is the
command line (``run``, ``attack``, ``evaluate``, and ``node``: one real node for their harness).
"""

from mycel.sim.hosts import connect_random, sim_config, sim_hosts
from mycel.sim.latency import MBIT, REGION_WEIGHTS, LatencyModel, Regions, Uniform, region_latency
from mycel.sim.network import SimConnection, SimNetwork, SimNode, SimTransport
from mycel.sim.runner import PartitionPlan, RunOptions, RunResult, run, run_script, summarize
from mycel.sim.script import Script, ScenarioError, load_params, parse_params, subnet_blob_msg

__all__ = [
    "MBIT",
    "REGION_WEIGHTS",
    "LatencyModel",
    "PartitionPlan",
    "Regions",
    "RunOptions",
    "RunResult",
    "ScenarioError",
    "Script",
    "SimConnection",
    "SimNetwork",
    "SimNode",
    "SimTransport",
    "Uniform",
    "connect_random",
    "load_params",
    "parse_params",
    "region_latency",
    "run",
    "run_script",
    "sim_config",
    "sim_hosts",
    "subnet_blob_msg",
    "summarize",
]
