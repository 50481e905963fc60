"""Every domain's state as libvirt last told the daemon.

Kept from the listing at each (re)connection, lifecycle events, hook reports
and the daemon's own starts. Admission ("may it start?") is answered from
here, never by asking libvirt about the guest, whose job lock the hook's
caller holds. Owned by the event loop: every change happens on its thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

#: The state a guest is in after a lifecycle event or hook operation.
STATE_AFTER = {
    "started": "running",
    "resumed": "running",
    "suspended": "paused",
    "pmsuspended": "pmsuspended",
    "stopped": "shut off",
    "shutdown": "shut off",
    "crashed": "crashed",
    "release": "shut off",
    "migrating in": "paused",
    "migrated in": "running",
    "migrated out": "shut off",
}

#: Events after which the guest does not run here (no pass checks it). A guest
#: that arrives by migration is checked once it resumes ("migrated in").
AT_REST = frozenset(
    {"stopped", "shutdown", "undefined", "crashed", "suspended", "migrating in", "migrated out"}
)


class GuestStates(Mapping[str, str]):
    """guest -> state ("running", "shut off", ...); a read-only mapping to readers."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}

    def __getitem__(self, guest: str) -> str:
        return self._states[guest]

    def __contains__(self, guest: object) -> bool:
        return guest in self._states

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def replace(self, states: Mapping[str, str]) -> None:
        """Everything anew, from a listing after a (re)connection."""
        self._states = dict(states)

    def record(self, guest: str, what: str) -> None:
        """Keep ``guest``'s state current from an event or a hook report."""
        state = STATE_AFTER.get(what)
        if what == "undefined":
            self._states.pop(guest, None)
        elif state:
            self._states[guest] = state
        elif guest not in self._states and what == "defined":
            self._states[guest] = "shut off"

    def running(self, guest: str) -> bool:
        return self._states.get(guest) == "running"
