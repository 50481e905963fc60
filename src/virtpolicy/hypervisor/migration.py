"""A live migration, peer to peer, as ``virtpolicy migrate`` asks libvirt for one.

The source's libvirtd connects to the destination's by its published URI and
moves the guest whole: live, its definition made persistent there and taken
from here (as ``virsh migrate --live --p2p --persistent --undefinesource``).
QEMU's stream goes where the destination says (``tcp://ADDRESS`` or
``unix:///PATH``); over TCP to anything but loopback, libvirt's TLS is asked
for, so that no guest's memory crosses a network in the clear.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import libvirt

#: Live, peer to peer, the definition moved with the guest.
FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def published_uri(connect: str, configured: str | None) -> str | None:
    """The URI other hosts' libvirtd reach this one by: as configured; else the
    daemon's own connection when it names a host; else, for the local system
    QEMU, ``qemu+ssh://HOSTNAME/system`` (how virsh users name a peer). None:
    this host takes no migrations (a session or test driver)."""
    if configured:
        return configured
    parts = urlsplit(connect)
    if parts.hostname:
        return connect
    if parts.scheme in ("qemu", "qemu+unix") and parts.path == "/system" and not parts.query:
        return f"qemu+ssh://{socket.gethostname()}/system"
    return None


def parameters(stream: str | None) -> tuple[dict[str, Any], int]:
    """libvirt's typed parameters and flags for a stream to ``stream`` (None:
    libvirt's default, the destination's host name over TCP)."""
    params: dict[str, Any] = {}
    flags = FLAGS
    if stream is not None:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = stream
    parts = urlsplit(stream or "tcp://")
    if parts.scheme == "tcp":
        if parts.hostname:  # QEMU listens on that address only, not on every one
            params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = parts.hostname
        if not _loopback(parts.hostname):
            flags |= libvirt.VIR_MIGRATE_TLS
    return params, flags


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
