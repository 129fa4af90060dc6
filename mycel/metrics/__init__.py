"""Prometheus metrics of a host: ``HostConfig(metrics=MetricsConfig())`` (the ``metrics`` extra).

::

    config = HostConfig(metrics=MetricsConfig(listen="127.0.0.1:9464"))
    async with open_host(config) as host:
        print(host.service(Metrics).url)   # http://127.0.0.1:9464/metrics

Metric names follow go-libp2p's where it has an equivalent (``libp2p_swarm_*``, ``libp2p_rcmgr_*``,
``libp2p_relaysvc_*``, ``libp2p_autonat_*``, ``libp2p_holepunch_*``); mycel's own start with ``mycel_``.
A Grafana dashboard using them is in ``docs/grafana/mycel.json``. See :mod:`mycel.metrics.service`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mycel.metrics.config import MetricsConfig

if TYPE_CHECKING:
    from mycel.metrics.service import HostCollector, Metrics


def __getattr__(name: str) -> Any:
    # Metrics needs prometheus_client (the extra); MetricsConfig does not, so HostConfig can name it
    if name in ("Metrics", "HostCollector"):
        from mycel.metrics import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HostCollector", "Metrics", "MetricsConfig"]
