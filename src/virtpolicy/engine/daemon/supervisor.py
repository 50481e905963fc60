"""Keeping the libvirt connection: connect, subscribe, list, and after a loss
(libvirtd restarted or crashed) do it all again, with exponential backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from virtpolicy.errors import HypervisorError
from virtpolicy.hypervisor.base import GuestEvent, Hypervisor
from virtpolicy.hypervisor.native import GuestInfo, NodeInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    max: float = 30.0


class Supervisor:
    """Runs :meth:`run` for the daemon's life; :attr:`connected` is set while the
    connection is up and its guests are listed."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        on_guest: GuestEvent,
        on_connected: Callable[[list[GuestInfo]], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.hypervisor = hypervisor
        self.on_guest = on_guest
        self.on_connected = on_connected
        self.backoff = backoff or Backoff()
        self.connected = asyncio.Event()
        #: The host as probed at the last connection (readable on the loop).
        self.info: NodeInfo | None = None
        self._lost = asyncio.Event()

    def lost(self, reason: str) -> None:
        """The connection is gone: reconnect. From libvirt's close callback (on the
        loop) or from the loop after a call failed with ConnectionLostError."""
        log.warning("connection to %s lost (%s); reconnecting", self.hypervisor.uri, reason)
        self._lost.set()

    async def run(self) -> None:
        delay = self.backoff.initial
        while True:
            try:
                guests = await asyncio.to_thread(self._connect)
            except HypervisorError as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                await asyncio.to_thread(self.hypervisor.close)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff.max)
                continue
            log.info(
                "connected to %s (%s driver)", self.hypervisor.uri, self.info and self.info.driver
            )
            delay = self.backoff.initial
            self._lost.clear()
            self.on_connected(guests)
            self.connected.set()
            await self._lost.wait()
            self.connected.clear()
            await asyncio.to_thread(self.hypervisor.close)

    def _connect(self) -> list[GuestInfo]:
        """(In a thread.) Open, subscribe, read the host and list the guests."""
        self.hypervisor.open()
        self.hypervisor.watch(self.on_guest, self.lost)
        self.info = self.hypervisor.node()
        return self.hypervisor.guests()
