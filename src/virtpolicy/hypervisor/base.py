"""The hypervisor seam: what the engine needs of one libvirt connection.

:class:`virtpolicy.hypervisor.connection.Hypervisor` is the real one;
:class:`virtpolicy.testing.MemoryHypervisor` is an in-memory one for the engine's
unit tests. Every method blocks (it talks to libvirtd): the daemon calls
them in worker threads, never on its event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from virtpolicy.hypervisor.native import GuestInfo, NodeInfo, Tuning
from virtpolicy.hypervisor.stats import ALL_GROUPS, Sample
from virtpolicy.policy.model import GuestPolicy

#: (guest, what happened: "started", "stopped", "tuned vcpupin", ...)
GuestEvent = Callable[[str, str], None]


class Hypervisor(Protocol):
    """One connection to a hypervisor, as the engine uses it."""

    uri: str

    def open(self) -> None:
        """Connect; ConnectionLostError when the hypervisor is away."""

    def close(self) -> None:
        """Disconnect (nothing if not connected)."""

    def watch(self, on_guest: GuestEvent, on_close: Callable[[str], None]) -> None:
        """Subscribe to lifecycle and tunable events on the current connection;
        ``on_close(reason)`` when the connection drops. Callbacks come on the
        event loop's thread and must not block."""

    def node(self) -> NodeInfo:
        """The host's CPU count and scheduler flavour."""

    def guests(self) -> list[GuestInfo]:
        """Every domain, running or defined."""

    def guest(self, name: str) -> GuestInfo:
        """One domain; GuestNotFoundError if there is none of that name."""

    def actual(
        self,
        name: str,
        running: bool | None = None,
        *,
        definition: bool = False,
        persistent: bool = True,
    ) -> Tuning:
        """The tuning in effect: live for a running guest, else the definition;
        with ``definition``, the definition's <numatune> and <cpu><topology> too."""

    def apply(
        self, name: str, tuning: Tuning, *, running: bool, persistent: bool = True
    ) -> list[str]:
        """Write ``tuning`` to the definition (a transient guest has none) and the
        live guest; problems that did not stop the rest."""

    def place(self, name: str, vcpu: int, cpus: frozenset[int]) -> None:
        """Pin one vCPU of a running guest, live only."""

    def set_cap(self, name: str, cap: int | None) -> None:
        """Cap a running guest (None: lift the cap), live only."""

    def set_balloon(self, name: str, kib: int) -> None:
        """Set a running guest's balloon to ``kib`` KiB, live only."""

    def read_mirror(self, name: str, *, persistent: bool = True) -> tuple[int, GuestPolicy] | None:
        """The (revision, policy) mirrored into the guest's definition (a transient
        guest's live state), if any."""

    def write_mirror(
        self,
        name: str,
        revision: int,
        policy: GuestPolicy | None,
        *,
        running: bool,
        persistent: bool = True,
    ) -> None:
        """Mirror ``policy`` into the guest's definition, and live if it runs
        (None: remove it)."""

    def start(self, name: str) -> bool:
        """Start a defined guest; False if it was running already."""

    def shutdown(self, name: str) -> None:
        """Ask the guest to shut down; returns at once."""

    def destroy(self, name: str) -> None:
        """Stop the guest at once."""

    def managedsave(self, name: str) -> None:
        """Save the guest's state and stop it."""

    def agent_ping(self, name: str, timeout_s: int = 5) -> None:
        """Raise unless the guest agent answers ``guest-ping``."""

    def migrate(self, name: str, uri: str, stream: str | None) -> None:
        """Migrate the running guest live to the libvirtd at ``uri``, peer to peer,
        its definition with it; QEMU's stream to ``stream`` (None: libvirt's
        default). Returns once the guest runs there."""

    def sample(self, groups: Collection[str] = ALL_GROUPS) -> Sample:
        """Every guest's utilization counters and the host CPUs' times; per-vCPU and
        memory counters only for the ``groups`` ("vcpu", "balloon") given."""
