"""This host's placement, kept current for the reconciler, the hook and the API.

The placer (:func:`virtpolicy.policy.placement.place`) is pure; this is where
the daemon feeds it: the guests defined here (every one, running or not, with
a policy or without: a guest without one floats over the shared pool like a
shared guest, and is never pinned), their policies, the host's topology and
the CPUs the config reserves for the host.

- A dedicated guest holds its host CPUs while it is defined, running or not,
  like Nova's pinned instances: its pins are in its definition before it
  starts, and a start never has to move anyone (the hook cannot: libvirtd holds
  the domain while it asks).
- Running guests arrive first, then the others, by name; a placed guest keeps
  its place. After a restart, a dedicated guest's place is read back from its
  pins (:func:`~virtpolicy.policy.placement.placed_from_pins`).
- Placement is *in play* when the config reserves CPUs or a guest here asks for
  dedicated CPUs or NUMA nodes. Until then nothing changes for anyone: a
  shared guest's pins stay the policy's alone, as before placement existed.
  When it falls out of play, the guests it pinned get every host CPU back.

Blocking where it reads pins back (libvirt): the reconciler calls it in its
pass's thread. Readers on the loop get the last placement, replaced whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from virtpolicy.hypervisor.native import GuestInfo
from virtpolicy.policy.cpuset import format_cpuset
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.placement import (
    Placed,
    Placement,
    Request,
    cpu_uses,
    place,
    placed_from_pins,
    request_for,
)
from virtpolicy.policy.room import room_for, to_record
from virtpolicy.policy.topology import Topology

#: (guest, its request) -> where its pins say it sits (None: nowhere, or unreadable)
PinsOf = Callable[[GuestInfo, Request], Placed | None]


class HostPlacement:
    """The placement of the guests on this host, as of the latest pass."""

    def __init__(self, reserved: frozenset[int] = frozenset()) -> None:
        self.reserved = reserved
        self._guests: dict[str, GuestInfo] = {}  # every domain here, as last seen
        self._placement = Placement()
        self._in_play = False
        #: Guests the placer pinned before it fell out of play: pinned to every
        #: host CPU since, until it is in play again.
        self._released: set[str] = set()
        #: Dedicated guests whose pins were read back since the last listing.
        self._read_back: set[str] = set()
        #: The host's topology at the latest placement (None: not connected yet).
        self.topology: Topology | None = None
        self._lock = threading.Lock()  # passes and reader threads

    # -- what passes tell it ---------------------------------------------------------

    def listed(self, guests: Iterable[GuestInfo]) -> None:
        """Every domain on the host (a full pass's listing)."""
        with self._lock:
            self._guests = {g.name: g for g in guests}
            self._read_back = set()

    def seen(self, name: str, info: GuestInfo | None) -> None:
        """One domain as looked up now (None: it is not defined)."""
        with self._lock:
            if info is None:
                self._guests.pop(name, None)
            else:
                self._guests[name] = info

    def update(
        self, topology: Topology | None, policies: Mapping[str, GuestPolicy], pins_of: PinsOf
    ) -> set[str]:
        """Place every guest here again (kept places stay: see the module); the
        guests whose place, or reason for having none, changed."""
        with self._lock:
            guests = dict(self._guests)
            before, was_in_play = self._placement, self._in_play
            current = dict(before.guests)
        in_play = topology is not None and bool(
            self.reserved
            or any(
                (p := policies.get(g)) is not None
                and (p.cpu.placement == "dedicated" or p.numa.nodes is not None)
                for g in guests
            )
        )
        if topology is None:
            with self._lock:
                self._placement, self._in_play = Placement(), False
            return set(before.guests) | set(before.refused) if was_in_play else set()
        order = sorted(guests.values(), key=lambda g: (not g.running, g.name))
        requests = [request_for(g.name, g.vcpus, policies.get(g.name)) for g in order]
        kept: dict[str, Placed] = {}
        for info, r in zip(order, requests, strict=True):
            if r.placement != "dedicated":
                continue  # shared guests float anew
            now = current.get(r.guest)
            if now is not None:  # still the shape its policy asks for?
                now = placed_from_pins(topology, r, dict(enumerate(now.vcpupin)), now.emulatorpin)
            elif r.guest not in self._read_back:  # a place from before this daemon's time
                self._read_back.add(r.guest)  # once per listing: a libvirt call
                now = pins_of(info, r)
            if now is not None:
                kept[r.guest] = now
        placement = place(topology, self.reserved, requests, kept)
        with self._lock:
            self._placement, self._in_play, self.topology = placement, in_play, topology
            if was_in_play and not in_play:  # the placer's pins are lifted from them
                self._released |= set(before.guests)
        if in_play != was_in_play:  # every guest's pins are the placer's now, or no more
            return set(guests) | set(before.guests)
        return _moved(before, placement) if in_play else set()

    # -- what readers ask ------------------------------------------------------------

    def of(self, guest: str) -> Placed | str | None:
        """Where ``guest`` goes: its place, why it has none, or None when placement
        is not in play."""
        with self._lock:
            if not self._in_play:
                return self._everywhere(guest) if guest in self._released else None
            placement = self._placement
        if guest in placement.refused:
            return placement.refused[guest]
        return placement.guests.get(guest)

    def _everywhere(self, guest: str) -> Placed | None:
        """Every host CPU for each vCPU: a guest the placer pinned, out of play."""
        info, topology = self._guests.get(guest), self.topology
        if info is None or topology is None:
            return None
        every = frozenset(c.id for c in topology.cpus)
        return Placed(tuple(every for _ in range(info.vcpus)), every, topology.nodes)

    def refusal(self, guest: str) -> str | None:
        """Why ``guest`` cannot be placed here (None: it can, or it is not known)."""
        with self._lock:
            return self._placement.refused.get(guest) if self._in_play else None

    def arriving(self, guest: str, vcpus: int, policy: GuestPolicy | None) -> str | None:
        """Why ``guest`` (migrating here with ``vcpus`` vCPUs) would find no place
        among the guests placed here; None: it would (see :func:`room_for`)."""
        with self._lock:
            in_play, before, topology = self._in_play, self._placement, self.topology
        if topology is None:
            return None
        kept = {g: p for g, p in before.guests.items() if p.dedicated and g != guest}
        return room_for(topology, self.reserved, kept, request_for(guest, vcpus, policy), in_play)

    def pools(self) -> dict[str, frozenset[int]]:
        """Each shared guest's CPUs (its pool within its nodes) while placement is
        in play; empty otherwise. For the tuners, which keep vCPUs there."""
        with self._lock:
            if not self._in_play:
                return {}
            placed = self._placement.guests
        return {g: p.emulatorpin for g, p in placed.items() if not p.dedicated}

    def info(self, guest: str) -> GuestInfo | None:
        """``guest`` as last seen (None: not defined here)."""
        with self._lock:
            return self._guests.get(guest)

    def view(self) -> dict[str, Any]:
        """For ``GET /v1/placement``: whether placement is in play, the reserved
        CPUs, every guest's place or refusal, and each host CPU's use. Out of play
        the guests are placed all the same (shared, over the whole host), to show."""
        with self._lock:
            in_play, placement, topology = self._in_play, self._placement, self.topology
        return {
            "in_play": in_play,
            "reserved": format_cpuset(self.reserved) if self.reserved else "",
            **placement.to_dict(),
            "cpus": cpu_uses(topology, placement, self.reserved) if topology else [],
            # Each NUMA node's memory (KiB), as libvirt's capabilities say.
            "node_memory_kib": {str(n): kib for n, kib in topology.memory.items()}
            if topology
            else {},
            # What another host needs to tell whether a guest migrating here fits.
            "room": to_record(topology, self.reserved, placement, in_play) if topology else None,
        }


def _moved(before: Placement, after: Placement) -> set[str]:
    names = set(before.guests) | set(before.refused) | set(after.guests) | set(after.refused)
    return {
        g
        for g in names
        if before.guests.get(g) != after.guests.get(g)
        or before.refused.get(g) != after.refused.get(g)
    }
