"""A live, read-only web view of a node: ``mycel listen --web 127.0.0.1:8080`` or a
:class:`~mycel.web.view.WebView` service in ``HostConfig.services``.

One page (HTML, vanilla JS and inline SVG; no external assets, works offline) polls ``/api/state``
every second: ids and addresses, reachability, connected peers (transport, security, muxer,
direction, RTT, agent), open streams by protocol, the gossipsub mesh per topic as a graph with peer
scores, the DHT routing table by bucket, relay reservations and bandwidth over time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mycel.web.view import WebView, snapshot


def __getattr__(name: str) -> Any:
    if name in ("WebView", "snapshot"):  # lazily: mycel.host imports mycel.web.http through MetricsConfig
        from mycel.web import view

        return getattr(view, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WebView", "snapshot"]
