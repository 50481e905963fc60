"""Room for a guest that arrives by migration: on this host (the hook asks its
daemon), or on another, from what that host's daemon published.

Only the dedicated guests already on a host bound where a newcomer can go:
they keep their places. A daemon publishes, with its placement, what another
host needs to run the same check offline (:func:`to_record`): its CPUs with
their places, its reserved CPUs, whether placement is in play there, and its
dedicated guests' places. :func:`from_record` reads it back, or gives None
for a record it cannot trust (written by an older daemon, or by hand): the
destination's hook then has the last word.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtpolicy.policy.placement import Placed, Placement, Request, place
from virtpolicy.policy.topology import HostCpu, Topology


def room_for(
    topology: Topology,
    reserved: frozenset[int],
    kept: Mapping[str, Placed],
    request: Request,
    in_play: bool,
) -> str | None:
    """Why ``request``'s guest would find no place among the dedicated guests
    ``kept`` here; None: it would (or placement is not in play here, and the
    newcomer does not bring it into play)."""
    if not (in_play or request.placement == "dedicated" or request.nodes is not None):
        return None
    others = [Request(g, len(p.vcpupin), "dedicated") for g, p in sorted(kept.items())]
    return place(topology, reserved, [*others, request], kept).refused.get(request.guest)


def to_record(
    topology: Topology, reserved: frozenset[int], placement: Placement, in_play: bool
) -> dict[str, Any]:
    """What :func:`room_for` needs of this host, as JSON data."""
    return {
        "in_play": in_play,
        "cpus": [[c.id, c.node, c.socket, c.core, c.llc] for c in topology.cpus],
        "memory": {str(n): kib for n, kib in topology.memory.items()},
        "reserved": sorted(reserved),
        "dedicated": {
            g: {
                "vcpupin": [sorted(c) for c in p.vcpupin],
                "emulatorpin": sorted(p.emulatorpin),
                "nodes": list(p.nodes),
                "dedicated": sorted(p.dedicated),
            }
            for g, p in sorted(placement.guests.items())
            if p.dedicated
        },
    }


def from_record(
    record: object,
) -> tuple[Topology, frozenset[int], dict[str, Placed], bool] | None:
    """(topology, reserved, dedicated guests' places, in play) from what
    :func:`to_record` wrote; None when it is not such a record."""
    if not isinstance(record, Mapping):
        return None
    try:
        cpus = [_cpu(row) for row in record["cpus"]]
        memory = {_whole(int(n)): _whole(k) for n, k in record["memory"].items()}
        reserved = frozenset(_whole(c) for c in record["reserved"])
        kept = {
            str(g): Placed(
                tuple(frozenset(map(_whole, c)) for c in p["vcpupin"]),
                frozenset(map(_whole, p["emulatorpin"])),
                tuple(map(_whole, p["nodes"])),
                frozenset(map(_whole, p["dedicated"])),
            )
            for g, p in record["dedicated"].items()
        }
        in_play = record["in_play"]
        if not cpus or not isinstance(in_play, bool):
            return None
        topology = Topology(cpus, memory)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    ids = {c.id for c in topology.cpus}
    if any(not (set(p.dedicated) | p.emulatorpin).issubset(ids) for p in kept.values()):
        return None
    return topology, reserved, kept, in_play


def _cpu(row: list[object]) -> HostCpu:
    """A host CPU from ``[id, node, socket, core, llc]`` (llc may be null)."""
    if len(row) != 5:
        raise ValueError(f"{row!r} is not a host CPU")
    llc = _whole(row[4]) if row[4] is not None else None
    return HostCpu(_whole(row[0]), _whole(row[1]), _whole(row[2]), _whole(row[3]), llc)


def _whole(value: object) -> int:
    """A whole number as JSON gives it (not a bool, not a float); ValueError else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value
