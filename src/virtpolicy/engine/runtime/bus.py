"""The daemon's event stream: what happened, in order, for anyone listening.

Kinds: ``lifecycle`` (libvirt said a guest started, stopped, ...),
``policy`` (a policy was written, by anyone), ``enforcement`` (the daemon
changed a guest's tuning), ``dependency`` (a required dependency of a
running guest stopped), ``job`` (a start or stop job began, a guest of it
finished, it ended).

Each event has an id. Ids only grow, also across daemon restarts (they
start from the clock in microseconds), so a client that reconnects with the
last id it saw gets what it missed while the daemon keeps it (the newest
:data:`KEEP` events), and a ``gap`` event when some of that is gone.
Publishing is safe from any thread; subscribers live on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from virtpolicy.clock import now

KINDS = ("lifecycle", "policy", "enforcement", "dependency", "job", "decision", "host", "stats")
#: Sent only to those who ask for them by kind.
ON_REQUEST = frozenset({"stats"})
KEEP = 4096
#: Events a subscriber may fall behind by before it is cut off (it may resume).
QUEUE = 1024


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    time: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.data, "id": self.id, "kind": self.kind, "time": self.time}


class EventBus:
    def __init__(self, keep: int = KEEP) -> None:
        self._ring: deque[Event] = deque(maxlen=keep)
        self._next = time.time_ns() // 1000
        #: Each subscriber's queue, and the kinds it asked for (empty: the default).
        self._subscribers: dict[asyncio.Queue[Event | None], Collection[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop subscribers run on; publishing from other threads goes through it."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def listening(self, kind: str) -> bool:
        """Whether any subscriber would receive an event of ``kind`` now."""
        return any(_wanted(kind, kinds) for kinds in list(self._subscribers.values()))

    def publish(self, kind: str, /, *, keep: bool = True, **data: Any) -> None:
        """Send an event; ``keep=False``: to those listening now only, not kept for
        resuming (the sampler's, which would crowd out everything else)."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._publish, kind, data, keep)
        else:
            self._publish(kind, data, keep)

    def _publish(self, kind: str, data: dict[str, Any], keep: bool = True) -> None:
        event = Event(self._next, kind, now(), data)
        self._next += 1
        if keep:
            self._ring.append(event)
        for queue in list(self._subscribers):
            if queue.qsize() < QUEUE:
                queue.put_nowait(event)
            else:  # too slow: cut off (the spare slot); it can resume from its last id
                self._subscribers.pop(queue, None)
                queue.put_nowait(None)

    def recent(self, kinds: Collection[str] = (), limit: int = 100) -> list[Event]:
        """The newest kept events (of ``kinds``, if given), newest first."""
        found = []
        for event in reversed(list(self._ring)):  # a copy: the loop appends meanwhile
            if _wanted(event.kind, kinds):
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    def close(self) -> None:
        """End every subscription (the daemon stops)."""
        self.closed = True
        for queue in self._subscribers:
            queue.put_nowait(None)  # there is always the spare slot
        self._subscribers.clear()

    async def subscribe(
        self, after: int | None = None, kinds: Collection[str] = (), idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Events after id ``after`` (kept ones first), then new ones as they come;
        None after every ``idle`` seconds without one (for keepalives).

        Ends when the bus closes or this subscriber falls too far behind.
        """
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE + 1)
        if self.closed:
            return
        self._subscribers[queue] = tuple(kinds)
        seen = after
        try:
            if after is not None:
                kept = [e for e in self._ring if e.id > after]
                first = kept[0].id if kept else self._next
                if first > after + 1:
                    yield Event(first - 1, "gap", now(), {"after": after, "resumes_at": first})
                for event in kept:
                    seen = event.id
                    if _wanted(event.kind, kinds):
                        yield event
            # The queue may repeat what the kept events held: skip up to ``seen``.
            while True:
                try:
                    async with asyncio.timeout(idle):
                        new = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                if new is None:
                    return
                if (seen is None or new.id > seen) and _wanted(new.kind, kinds):
                    yield new
        finally:
            self._subscribers.pop(queue, None)


def _wanted(kind: str, kinds: Collection[str]) -> bool:
    return kind in kinds if kinds else kind not in ON_REQUEST
