"""Services: protocol implementations that live inside a host (ping, identify, gossipsub, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import trio

from mycel.core.abc import Connection, MuxedStream

if TYPE_CHECKING:
    from mycel.host import Host

StreamHandler = Callable[[MuxedStream], Awaitable[None]]


class Service:
    """A small object with the protocols it serves and hooks into the host's life.

    ``handlers()`` are installed before ``run`` starts; ``run`` is started with ``nursery.start`` and
    should call ``task_status.started()`` once ready (the default does only that).
    ``connection_opened`` / ``connection_closed`` are called synchronously: spawn work with
    ``host.spawn``, never block in them.
    """

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {}

    async def run(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def connection_opened(self, host: Host, conn: Connection) -> None:
        pass

    def connection_closed(self, host: Host, conn: Connection) -> None:
        pass
