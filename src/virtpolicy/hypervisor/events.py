"""libvirt events, driven from asyncio through libvirt-python's ``libvirtaio``.

:func:`use_asyncio` must run once per process, on the daemon's loop, before
any connection is opened: libvirt dispatches events and keepalives through the
event implementation registered first, and it cannot be replaced later.

Callbacks run on the loop's thread and must not block: they only tell the
controller *which guest* changed and *why*; the controller does the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import libvirt
import libvirtaio

log = logging.getLogger(__name__)

#: Lifecycle events after which a guest's tuning must be checked.
_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

#: A migration's lifecycle events, by (event, detail): on the destination the
#: guest arrives paused, then resumes once the migration is done; on the source
#: it stops. Neither is a start or a stop of the guest.
_MIGRATION = {
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED): "migrating in",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED): "migrated in",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED): "migrated out",
}

#: (guest, what happened) -> None
GuestCallback = Callable[[str, str], None]


def use_asyncio(loop: asyncio.AbstractEventLoop) -> None:
    """Register ``loop`` as libvirt's event implementation (once per process)."""
    current = libvirtaio.getCurrentImpl()
    if current is None:
        libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
    elif current.loop is not loop:
        raise RuntimeError("libvirt events are already bound to another asyncio loop")


class EventWatch:
    """Lifecycle, tunable and connection-close callbacks on one connection."""

    def __init__(
        self,
        conn: Any,
        on_guest: GuestCallback,
        on_close: Callable[[str], None],
        on_domain: Callable[[Any, int, int], None] | None = None,
    ) -> None:
        """``on_domain``: each lifecycle event as libvirt gives it (the domain,
        event, detail), before ``on_guest`` hears of it."""
        self.conn = conn
        self.on_guest = on_guest
        self.on_close = on_close
        self.on_domain = on_domain
        self._ids: list[int] = []

    def register(self) -> None:
        """Subscribe on the connection (a new watch after each reconnect); raises
        libvirt's own errors, which the caller translates."""
        conn = self.conn  # its keepalive is the connection's (connection.py)
        self._ids = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            ),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE, self._tunable, None
            ),
        ]
        conn.registerCloseCallback(self._closed, None)

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        what = _MIGRATION.get((event, detail)) or _LIFECYCLE.get(event, f"event {event}")
        if self.on_domain is not None:
            self.on_domain(dom, event, detail)
        self.on_guest(dom.name(), what)

    def _tunable(self, _conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        self.on_guest(dom.name(), "tuned " + ",".join(sorted(params)))

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        reasons = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
        }
        self._ids = []
        self.on_close(reasons.get(reason, f"reason {reason}"))
