"""Reconcile passes: one queue of "dirty" guests and one worker that drains it.

Everything that may have put a guest off its policy asks for a pass: a store
change, a libvirt event, the periodic timer, a (re)connection. The worker
runs each pass in a thread, so that libvirt calls never stall the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable

from virtpolicy.engine.runtime.aio import timed_thread
from virtpolicy.engine.runtime.outage import Outage
from virtpolicy.engine.tuning.reconcile import Reconciler
from virtpolicy.errors import ConnectionLostError, StoreError

log = logging.getLogger(__name__)

ALL = "*"  # in the dirty set: every guest


class Passes:
    """Owned by the event loop; :meth:`request` is the one way in."""

    def __init__(
        self,
        reconciler: Reconciler,
        connected: asyncio.Event,
        on_lost: Callable[[str], None],
        retry_s: float = 0.5,
        on_done: Callable[[list[str]], None] = lambda _guests: None,
    ) -> None:
        self.reconciler = reconciler
        self.connected = connected
        self.on_lost = on_lost
        self.retry_s = retry_s
        self.on_done = on_done  # the guests a pass checked, on the loop
        self.count = 0
        #: CPU time (this daemon's, on the worker's thread) its passes took:
        #: all of them, and the last pass over every guest.
        self.cpu_s = 0.0
        self.full_cpu_s = 0.0
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def request(self, guest: str | None = None) -> None:
        """Ask for a pass over ``guest`` (None: every guest)."""
        self._dirty.add(guest or ALL)
        self._wake.set()

    def request_each(self, guests: Iterable[str]) -> None:
        """Ask for a pass over each of ``guests``."""
        for guest in guests:
            self.request(guest)

    async def periodic(self, interval: float) -> None:
        """A pass over every guest every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            self.request()

    async def run(self) -> None:
        outage = Outage("store (reconcile passes)", log)
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.connected.wait()
            dirty, self._dirty = self._dirty, set()
            if not dirty:
                continue
            guests = None if ALL in dirty else sorted(dirty)
            try:
                checked, used = await timed_thread(
                    functools.partial(self.reconciler.reconcile, guests)
                )
                outage.answered()
                self.count += 1
                self.cpu_s += used
                if guests is None:
                    self.full_cpu_s = used
                self.on_done([s.guest for s in checked])
            except ConnectionLostError as exc:
                self._dirty |= dirty  # redo after the reconnect
                self.on_lost(str(exc))
            except StoreError as exc:
                outage.failed(exc)
                self._dirty |= dirty
                await asyncio.sleep(self.retry_s)
                self._wake.set()
            except Exception:
                # Top of a long-running loop: log with traceback and go on.
                log.exception("reconcile pass failed")
