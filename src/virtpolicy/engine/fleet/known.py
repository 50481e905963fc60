"""What this daemon knows of the fleet: the other hosts, the rows of the guests
it looks at on them, and the names of every guest they have.

:class:`Fleet` is kept current by :class:`~virtpolicy.engine.fleet.membership.
Membership` (replaced whole, never changed in place: the loop reads while a
thread reads anew) and asked by the prober, the reconciler and jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any

from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.store.base import LOST_AFTER_BEATS, GuestState, HostRecord

log = logging.getLogger(__name__)


class Fleet:
    """What this daemon knows of the fleet: the other hosts and their guests as
    last read (replaced whole, never changed in place: the loop reads them while
    a thread reads anew), and whether the store answers. :class:`Membership`
    keeps it current; the prober, the reconciler and jobs ask it."""

    def __init__(self, name: str, heartbeat: float, states: GuestStates) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.states = states
        self.hosts: dict[str, HostRecord] = {}
        #: guest -> host -> state, of the guests this daemon looks at (its own
        #: guests' names, what they depend on): not every other host's guest.
        self.others: dict[str, dict[str, GuestState]] = {}
        #: The names of every guest defined on another host (those newly there at
        #: each read; all of them every FULL_READ_BEATS beats, so that one gone is
        #: let go): whose policies this daemon passes over.
        self.elsewhere: frozenset[str] = frozenset()
        self.read_at: float | None = None  # Unix time of the last good read
        self.store_ok = True
        self.registered = False
        #: When this daemon last found the store answering after it did not (Unix
        #: time): no host beat while it was down, so none is lost for that gap.
        self.store_back_at: float | None = None

    # -- kept current by the membership task ---------------------------------------

    def joined(self) -> None:
        """This host is registered in the store."""
        self.registered = True

    def read(
        self,
        hosts: dict[str, HostRecord],
        others: dict[str, dict[str, GuestState]],
        at: float,
        elsewhere: frozenset[str],
    ) -> None:
        """The fleet as read (from a thread: each replaced whole, as the loop reads)."""
        self.hosts, self.others, self.read_at = hosts, others, at
        self.elsewhere = elsewhere | others.keys()

    def seen(self, rows: Iterable[GuestState]) -> None:
        """Rows of other hosts' guests read besides the fleet's reads (from a thread)."""
        others = merged(self.others, rows)
        self.others, self.elsewhere = others, self.elsewhere | others.keys()

    def store_failed(self, exc: Exception) -> None:
        """The store did not answer (said once, until it answers again)."""
        if self.store_ok:
            log.warning("fleet: %s", exc)
        self.store_ok = False

    def store_answered(self) -> None:
        if not self.store_ok:
            log.info("fleet: the store answers again")
            self.store_back_at = time.time()
        self.store_ok = True

    # -- asked by the daemon's parts ---------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What this daemon knows of the fleet, for ``GET /v1/host``."""
        return {
            "hosts": sorted(self.hosts),
            "guests": len(self.elsewhere),
            "store": "ok" if self.store_ok else "unreachable",
            "read_at": self.read_at,
        }

    def shown_state(self, record: HostRecord, now: float) -> str:
        """``record``'s state at ``now``: ``lost`` as the record says, but not for a
        silence the store caused (every host's heartbeats failed while it was
        down): after it answers again, each host has its three beats to beat."""
        state = record.shown_state(now)
        back = self.store_back_at
        if (
            state == "lost"
            and back is not None
            and now - back <= LOST_AFTER_BEATS * record.heartbeat_s
        ):
            return "up"
        return state

    def where(self, guest: str) -> list[tuple[GuestState, HostRecord | None]]:
        """``guest`` on the other hosts, as last read, with each host's record."""
        return [(g, self.hosts.get(h)) for h, g in sorted(self.others.get(guest, {}).items())]

    def host_of(self, guest: str) -> str | None:
        """The other host where ``guest`` is defined, when it is not here: whose
        daemon starts and stops it in a job (a host that is up first, and of
        those one where it runs; a lost host's guest fails there, saying so)."""
        if guest in self.states:
            return None
        return self.chosen(self.where(guest), self.as_of())

    def here(self, guest: str) -> bool:
        """Whether ``guest`` is defined on this host."""
        return guest in self.states

    def chosen(
        self, where: Iterable[tuple[GuestState, HostRecord | None]], now: float
    ) -> str | None:
        """Of the hosts where a guest is (``where``), the one whose daemon starts and
        stops it: a host that is up first, and of those one where it runs."""
        there = [
            (self.shown_state(h, now) != "up", not g.running, g.host)
            for g, h in where
            if h is not None and h.name != self.name
        ]
        return min(there)[2] if there else None

    def host_state(self, host: str) -> str:
        """``up``, ``lost`` or ``left`` as last read; ``unknown`` for no such host."""
        if host == self.name:
            return "up"
        record = self.hosts.get(host)
        return self.shown_state(record, self.as_of()) if record is not None else "unknown"

    def agent_ready(self, guest: str, condition: str) -> bool:
        """Whether another host last reported ``condition`` holding on ``guest``."""
        return any(g.running and g.ready.get(condition, False) for g, _ in self.where(guest))

    def saw_running(self, guest: str, host: str) -> None:
        """A job saw ``guest`` start on ``host``: so the fleet's state says, before
        that host's next write is read (a dependent here may start at once)."""
        there = self.others.get(guest, {})
        if host in there:  # replaced whole: a thread may be reading
            now = dataclasses.replace(there[host], state="running", updated_at=time.time())
            self.others = {**self.others, guest: {**there, host: now}}

    def clash(self, guest: str, uuid: str) -> str | None:
        """Why ``guest`` (running here with ``uuid``) must not be enforced: the same
        name runs on another host that is up with another UUID. (The same UUID on
        two hosts for a while is a migration.)"""
        then = self.as_of()
        for g, h in self.where(guest):
            if g.running and g.uuid != uuid and h is not None and self.shown_state(h, then) == "up":
                return (
                    f"{guest} runs on {self.name} (UUID {uuid}) and on {g.host} (UUID {g.uuid}):"
                    " two guests of one name in the fleet; neither is enforced until one is"
                    " renamed or stopped"
                )
        return None

    def running_elsewhere(self, guest: str) -> bool:
        """Whether ``guest`` runs on another host that is up, as last read."""
        then = self.as_of()
        return any(
            g.running and h is not None and self.shown_state(h, then) == "up"
            for g, h in self.where(guest)
        )

    def as_of(self) -> float:
        """When the fleet's state was last read (now, before the first read)."""
        return self.read_at if self.read_at is not None else time.time()

    def stale(self, now: float) -> float | None:
        """How old the fleet's state is (s) when older than three heartbeats."""
        if self.read_at is None:
            return None if not self.registered else float("inf")
        age = now - self.read_at
        return age if age > 3 * self.heartbeat else None


def merged(
    others: dict[str, dict[str, GuestState]], rows: Iterable[GuestState]
) -> dict[str, dict[str, GuestState]]:
    """``others`` (guest -> host -> row) with ``rows`` in it: a new mapping, and a
    new inner one for each guest read (the old ones may be read meanwhile)."""
    found = dict(others)
    for g in rows:
        found[g.guest] = {**found.get(g.guest, {}), g.host: g}
    return found
