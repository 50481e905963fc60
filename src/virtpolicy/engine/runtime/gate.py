"""A concurrency limit that lets the most urgent waiter in first.

``asyncio.Semaphore`` wakes waiters in arrival order. An orchestrated start
wants the guest with the longest chain of dependents behind it to go first
when more guests are ready than may start at once (list scheduling on the
critical path), so that a burst of ready guests does not delay the chain
that decides when the whole group is up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    """At most ``width`` holders at once; a waiter with a higher ``priority`` is let
    in before one with a lower, and equal priorities in arrival order."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError(f"width: {width} is not at least 1")
        self._free = width
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def held(self, priority: float = 0.0) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: float = 0.0) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # it was our turn already: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1
