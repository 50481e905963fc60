"""The fleet as the store shows it: hosts with their state and guest counts, and
every guest's status as its host's daemon last published it.

Read by ``virtpolicy hosts`` (in-process or through any daemon's
``GET /v1/hosts``); a host whose heartbeat is older than three of its
intervals is ``lost``, computed here from the reader's clock.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from virtpolicy.hypervisor.stats import HostMemory
from virtpolicy.store.base import FleetRecords, GuestState, HostRecord, PolicyStore


def hosts(store: FleetRecords, now: float | None = None) -> list[dict[str, Any]]:
    """One object per host: ``name``, ``state`` (up, lost, left), ``uri``,
    ``guests`` and ``running`` (as it last published), ``heartbeat`` (ISO 8601
    UTC) and its age in seconds."""
    now = time.time() if now is None else now
    return _host_rows(store.hosts(), _counts(store.guest_states()), now)


def _counts(states: Iterable[GuestState]) -> tuple[Counter[str], Counter[str]]:
    """Per host: its guests, and how many of them run."""
    guests: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for g in states:
        guests[g.host] += 1
        running[g.host] += g.running
    return guests, running


def _host_rows(
    records: Iterable[HostRecord], counts: tuple[Counter[str], Counter[str]], now: float
) -> list[dict[str, Any]]:
    guests, running = counts
    return [
        {
            "name": h.name,
            "state": h.shown_state(now),
            "uri": h.uri,
            "guests": guests[h.name],
            "running": running[h.name],
            "heartbeat": datetime.fromtimestamp(h.heartbeat_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            "heartbeat_age_s": round(max(0.0, now - h.heartbeat_at), 1),
            "clock_offset_s": round(h.clock_offset_s, 3),
            "memory": _memory(h.memory),
        }
        for h in records
    ]


def _memory(memory: Mapping[str, float | None] | None) -> dict[str, float | None] | None:
    """A host's memory as its record has it, with the share in use."""
    if not memory:
        return None
    total, available = memory.get("total_kib"), memory.get("available_kib")
    if not total or available is None:
        return {**memory, "used_percent": None}
    return HostMemory(int(total), int(available), memory.get("stall_percent")).to_dict()


def statuses(
    store: FleetRecords,
    host: str | None = None,
    *,
    besides: str | None = None,
    guest: str | None = None,
) -> list[dict[str, Any]]:
    """Each guest's status as its host last published it, with a ``host`` key (the
    state ``unknown`` when that host is lost); of ``host`` only if given, and not
    of ``besides`` (the asking daemon's own, which it has fresher). Sorted by
    guest, then host."""
    now = time.time()
    lost = {h.name for h in store.hosts() if h.shown_state(now) != "up"}
    return [
        _status(g, lost)
        for g in store.guest_states(host, guest=guest, statuses=True)
        if g.status is not None and g.host != besides
    ]


def _status(g: GuestState, lost: frozenset[str] | set[str]) -> dict[str, Any]:
    """A guest's status as its host published it, with its state as of the row
    (written at each change, where the status is as of the last pass), and
    ``unknown`` on a lost host: what it last was is no longer known. A guest
    without a policy has no status: its name, host and state only."""
    status = g.status if g.status is not None else unmanaged(g.guest)
    return {**status, "host": g.host, "state": "unknown" if g.host in lost else g.state}


def unmanaged(guest: str) -> dict[str, Any]:
    """The row of a guest that has no policy (virtpolicy leaves it alone)."""
    return {"guest": guest, "policy_revision": None}


def fleet_statuses(store: PolicyStore, host: str | None = None) -> list[dict[str, Any]]:
    """:func:`statuses` of every host, and a row on no host (``host`` None, state
    ``undefined``) for each guest with a policy that no host has published."""
    rows = statuses(store, host)
    if host is None:
        seen = {r["guest"] for r in rows}
        rows += [
            {
                "guest": s.policy.guest,
                "host": None,
                "state": "undefined",
                "policy_revision": s.revision,
            }
            for s in store.list_policies()
            if s.policy.guest not in seen
        ]
    return sorted(rows, key=lambda r: (r["guest"], r["host"] or ""))


@dataclass(frozen=True, slots=True)
class _Made:
    """What :class:`FleetReads` hands out, made once per change of the rows."""

    lost: frozenset[str]
    statuses: list[dict[str, Any]]
    #: Every guest a host publishes, with a policy or not.
    everyone: list[dict[str, Any]]
    guests: frozenset[str]
    hosts_seen: frozenset[str]
    counts: tuple[Counter[str], Counter[str]]
    records: list[HostRecord]
    #: (host, everyone) -> the rows and guests of every other host, made when first asked.
    without: dict[tuple[str, bool], tuple[list[dict[str, Any]], frozenset[str]]] = field(
        default_factory=dict
    )


class FleetReads:
    """What :func:`statuses` and :func:`hosts` give, kept for every reader of one
    API and brought up to date at most once per ``ttl`` seconds: each open web
    page reloads them after every event, and reading 10,000 statuses whole
    takes the better part of a second.

    The first read is whole; after it, only the rows written since the last
    read (less ``skew`` seconds for the hosts' clocks: each stamps its own
    rows), and the keys of all rows (without their statuses), to drop the
    guests no host publishes any more. Blocking (the store): call it in a
    thread."""

    def __init__(self, store: FleetRecords, ttl: float = 2.0, skew: float = 10.0) -> None:
        self.store = store
        self.ttl, self.skew = ttl, skew
        self._lock = threading.Lock()  # one read at a time; the others wait for it
        self._rows: dict[tuple[str, str], GuestState] = {}
        self._hosts: list[HostRecord] = []
        self._checked = -math.inf  # monotonic
        self._read_at: float | None = None  # Unix time of the last read's start
        #: What readers get, made once per change.
        self._made: _Made | None = None

    def statuses_and_guests(
        self, besides: str | None, *, everyone: bool = False
    ) -> tuple[list[dict[str, Any]], frozenset[str]]:
        """Every host's guests' statuses but ``besides``'s, by guest then host, a
        lost host's guests in state ``unknown`` (with ``everyone``, the guests
        without a policy too); and the guests with a policy among them (do not
        change either)."""
        made = self._current()
        rows = made.everyone if everyone else made.statuses
        if besides is None or besides not in made.hosts_seen:
            return rows, made.guests
        if (besides, everyone) not in made.without:  # the asker's own: the same each time
            kept = [r for r in rows if r["host"] != besides]
            guests = frozenset(r["guest"] for r in made.statuses if r["host"] != besides)
            made.without[besides, everyone] = (kept, guests)
        return made.without[besides, everyone]

    def hosts(self) -> list[dict[str, Any]]:
        """:func:`hosts`, counted from the rows kept here."""
        made = self._current()
        return _host_rows(made.records, made.counts, time.time())

    def _current(self) -> _Made:
        with self._lock:
            now = time.monotonic()
            if now - self._checked > self.ttl:
                self._read()
                self._checked = now
            lost = frozenset(h.name for h in self._hosts if h.shown_state(time.time()) != "up")
            if self._made is None or self._made.lost != lost:
                rows = sorted(self._rows.values(), key=lambda g: (g.guest, g.host))
                everyone = [_status(g, lost) for g in rows]
                statuses = [r for r, g in zip(everyone, rows, strict=True) if g.status is not None]
                self._made = _Made(
                    lost,
                    statuses,
                    everyone,
                    frozenset(r["guest"] for r in statuses),
                    frozenset(g.host for g in rows),
                    _counts(rows),
                    self._hosts,  # replaced whole at each read, never changed
                )
            return self._made

    def _read(self) -> None:
        started = time.time()
        if self._read_at is None:
            fresh = self.store.guest_states(statuses=True)
            self._rows = {(g.guest, g.host): g for g in fresh}
            self._made = None
        else:
            changed = self.store.guest_states(since=self._read_at - self.skew, statuses=True)
            keys = self.store.guest_keys()
            gone = self._rows.keys() - keys
            for key in gone:
                del self._rows[key]
            for g in changed:
                if self._rows.get((g.guest, g.host)) != g:
                    self._rows[g.guest, g.host] = g
                    self._made = None
            if gone:
                self._made = None
        self._hosts = self.store.hosts()
        if self._made is not None:  # the hosts' heartbeats moved on
            self._made = dataclasses.replace(
                self._made, records=self._hosts, without=self._made.without
            )
        self._read_at = started
