"""MetricsConfig: the one HostConfig field that turns Prometheus metrics on (no prometheus_client import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mycel.core.errors import ConfigError


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics of one host (``HostConfig(metrics=MetricsConfig(...))``).

    Needs the ``metrics`` extra (``pip install 'mycel[metrics]'``, i.e. ``prometheus_client``).
    """

    listen: str | None = "127.0.0.1:0"
    """Where the HTTP exporter serves ``/metrics`` (``host:port``; port 0 picks a free one, see
    ``host.service(Metrics).address``); None serves nothing (read ``Metrics.registry`` yourself).
    Loopback by default: a non-loopback address is served too, with a warning in the log."""
    registry: Any = None
    """A ``prometheus_client.CollectorRegistry`` to register in; None (the default): a registry of the
    host's own, so two hosts in one process never mix their figures. The global
    ``prometheus_client.REGISTRY`` is used only when passed here (then by one host only: a second
    host registering the same names fails its Metrics service, not the host)."""
    max_label_values: int = 256
    """Distinct protocols / topics labelled one by one per metric; beyond, they are counted under
    ``"other"`` (a peer inventing protocol ids cannot grow the registry without bound)."""

    def __post_init__(self) -> None:
        if self.listen is not None:
            from mycel.web.http import parse_listen

            try:
                parse_listen(self.listen)
            except ValueError as exc:
                raise ConfigError(f"MetricsConfig.listen: {exc}") from None
        if not isinstance(self.max_label_values, int) or self.max_label_values < 1:
            raise ConfigError(f"MetricsConfig.max_label_values: must be a positive integer, got {self.max_label_values!r}")

    def __deepcopy__(self, memo: dict[int, object]) -> MetricsConfig:
        return self  # frozen; the registry (if the user passed one) is theirs to share


__all__ = ["MetricsConfig"]
