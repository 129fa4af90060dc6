"""A budget of schedule points for stream calls that need not wait.

trio makes every stream call a schedule point; on a busy connection that is a trip through the
scheduler per call, most of the CPU of a small write. Stream calls here stay cancellation points but
yield only every ``every``-th time in a row without waiting, so a task looping on a connection that never
runs dry still lets the others run.
"""

from __future__ import annotations

from trio.lowlevel import cancel_shielded_checkpoint

YIELD_EVERY = 32


class YieldBudget:
    """Counts the calls on one stream that completed without waiting; every ``every``-th one in a row
    yields to the scheduler (:meth:`spend` runs a cancel-shielded checkpoint), :meth:`waited` resets the count.
    """

    __slots__ = ("_every", "_since")

    def __init__(self, every: int = YIELD_EVERY) -> None:
        self._every = every
        self._since = 0  # calls completed in a row without a schedule point

    def waited(self) -> None:
        """The call waited (so it went through the scheduler): the count starts again."""
        self._since = 0

    async def spend(self, parked: bool = False) -> None:
        """End of a stream call; ``parked``: it waited already and need not yield again."""
        if parked:
            self._since = 0
            return
        n = self._since + 1
        if n >= self._every:
            n = 0
            await cancel_shielded_checkpoint()
        self._since = n
