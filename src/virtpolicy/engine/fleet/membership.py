"""This daemon as a member of a fleet: its host row, its heartbeat, its guests.

Once connected to libvirt the daemon registers its host in the store (name,
URI, CPUs and topology, version), beats every ``heartbeat`` seconds, and
publishes the state of the guests it sees whenever one changes (at most once
per :data:`PUBLISH_S`), so that every daemon and CLI sharing the store sees
the whole fleet. A clean stop marks the host ``left``. Store errors are
logged once and retried at the next beat: the daemon goes on enforcing what
it last read (see :attr:`Fleet.store_ok`).

Three parts: :class:`~virtpolicy.engine.fleet.known.Fleet` is what this daemon
knows of the fleet (asked by the prober, the reconciler and jobs),
:class:`Unpublished` the guests to publish (marked by passes and events),
:class:`Membership` the task that registers, beats, publishes and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from virtpolicy import __version__
from virtpolicy.clock import now as _now
from virtpolicy.engine.fleet.known import Fleet, merged
from virtpolicy.errors import HypervisorError, StoreError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.hypervisor.native import GuestInfo
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import FleetRecords, GuestState, HostRecord

__all__ = ["Fleet", "Membership", "Unpublished"]

log = logging.getLogger(__name__)

#: Changes of guest states within this long go out in one write.
PUBLISH_S = 0.2
#: Seconds from registering to the first heartbeat (at most the heartbeat).
FIRST_BEAT_S = 5.0
#: Every this many beats the other hosts' guests are read whole (to see those
#: gone); in between only the rows written since the last read, less
#: :data:`SLACK_S` for clocks slightly apart and writes in flight.
FULL_READ_BEATS = 15
SLACK_S = 5.0


class Unpublished:
    """The guests whose state or status changed since this host last published
    them: marked by passes and libvirt's events, taken by :class:`Membership`.
    On the loop's thread."""

    def __init__(self) -> None:
        self.guests: set[str] = set()
        self.everything = True  # publish every guest at the next chance
        self.wake = asyncio.Event()

    def checked(self, guests: Iterable[str]) -> None:
        """A pass checked these guests: their statuses may have changed."""
        self.guests.update(guests)
        self.wake.set()

    def take(self) -> tuple[bool, set[str]]:
        """(Whether every guest is to publish, the guests marked), and none left."""
        taken = (self.everything, self.guests)
        self.everything, self.guests = False, set()
        return taken

    def changed(self, guest: str | None = None) -> None:
        """A guest's state changed (None: all may have, after a reconnection)."""
        if guest is None:
            self.everything = True
        else:
            self.guests.add(guest)
        self.wake.set()


class Membership:
    """Runs until cancelled; :meth:`leave` on a clean stop."""

    def __init__(
        self,
        store: FleetRecords,
        hypervisor: Hypervisor,
        fleet: Fleet,
        unpublished: Unpublished,
        connected: asyncio.Event,
        *,
        ready: Callable[[str], Mapping[str, bool]],
        status: Callable[[str], Mapping[str, Any] | None],
        policies: Callable[[], Mapping[str, GuestPolicy]],
        publish: Callable[..., None],
        notice: Callable[[str, str], None],
        on_clash: Callable[[set[str]], None],
        on_beat: Callable[[], None],
        watched: Callable[[], Collection[str]] = lambda: (),
        memory: Callable[[], Mapping[str, float | None] | None] = lambda: None,
        placement: Callable[[], Mapping[str, Any]] = dict,
        migration: Mapping[str, str | None] | None = None,
    ) -> None:
        """``ready``: which readiness conditions of a guest hold now; ``status``: a
        guest's status as last checked (with a policy); ``publish``: an event
        (``host`` when another host's state changes); ``notice``: a note on a
        guest's status (a dependency's host is lost); ``on_clash``: the guests
        whose clash began or ended; ``on_beat``: after each read of the fleet;
        ``watched``: the other guests whose state on other hosts matters here
        (what this host's guests depend on); ``memory``: the host's memory as
        last sampled, published with each heartbeat; ``placement``: where the
        placer put this host's guests, published with a heartbeat when it
        changed. All called on the loop. ``migration``: how other hosts migrate
        guests here (see :class:`HostRecord`), published when registering."""
        self.store = store
        self.hypervisor = hypervisor
        self.fleet = fleet
        self.unpublished = unpublished
        self.connected = connected
        self.ready, self.status, self.policies = ready, status, policies
        self.publish, self.notice = publish, notice
        self.on_clash, self.on_beat = on_clash, on_beat
        self.watched = watched
        self.memory = memory
        self.placement = placement
        self.migration = migration
        #: The placement as last written: written again only when it changes.
        self._placement_sent: Mapping[str, Any] | None = None
        self._read_for: set[str] = set()  # the guests whose rows the last read kept
        self.name = fleet.name
        self.states = fleet.states
        self._uuids: dict[str, str] = {}
        self._published: dict[str, tuple[str, str, str]] = {}  # guest -> what was written
        self._beats = 0
        self._clashing: set[str] = set()
        self._host_states: dict[str, str] = {}

    def listed(self, guests: list[GuestInfo]) -> None:
        """The listing after a (re)connection: every guest's UUID, and all to publish."""
        self._uuids.update((g.name, g.uuid) for g in guests)
        self.unpublished.changed(None)

    async def run(self) -> None:
        next_beat = 0.0
        while True:
            if not self.fleet.registered:  # the host's CPUs and topology come from libvirt
                await self.connected.wait()
            # Once registered the daemon beats even while libvirtd restarts: the
            # daemon lives, and its guests' states are as last published.
            now = time.monotonic()
            if not self.fleet.registered:
                if await self._call(self._register):
                    await self._read()  # what the fleet holds, clashes first of all
                    # The first beat comes soon: it brings the host's memory,
                    # which the first sample reads.
                    next_beat = now + min(FIRST_BEAT_S, self.fleet.heartbeat)
                    continue
            elif now >= next_beat:
                await self._beat()
                await self._read()
            if now >= next_beat:
                next_beat = now + self.fleet.heartbeat
            if self.fleet.registered and (self.unpublished.everything or self.unpublished.guests):
                await self._publish()
            try:
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self.unpublished.wake.wait()
                await asyncio.sleep(PUBLISH_S)  # gather what changes together
            except TimeoutError:
                pass
            self.unpublished.wake.clear()

    async def _read(self) -> None:
        """Read the fleet, then act on what it says: hosts come or lost, guests of
        one name on two hosts (before any pass enforces one of them)."""
        if await self._call(self.read_fleet, self.looked_at()):
            self._check_hosts()
            self._check_clashes()
            self.on_beat()

    async def _beat(self) -> None:
        """A heartbeat, with the host's memory, and its placement if it changed."""
        view = self.placement()
        changed = view if view != self._placement_sent else None
        if await self._call(self.store.heartbeat, self.name, self.memory(), changed):
            self._placement_sent = view

    async def leave(self) -> None:
        """A clean stop: the host is ``left`` and its guests' states are dropped."""
        if self.fleet.registered:
            await self._call(self.store.leave_host, self.name)

    async def _call(self, fn: Callable[..., object], *args: object) -> bool:
        try:
            await asyncio.to_thread(fn, *args)
        except (StoreError, HypervisorError) as exc:
            self.fleet.store_failed(exc)
            return False
        self.fleet.store_answered()
        return True

    def _register(self) -> None:
        info = self.hypervisor.node()
        record = HostRecord(
            self.name,
            self.hypervisor.uri,
            info.cpus,
            info.topology,
            __version__,
            "up",
            self.fleet.heartbeat,
            time.time(),
            _now(),
            migration=self.migration,
        )
        self.store.register_host(record)
        # Steps this host's daemon claimed and never finished were a process's
        # that has ended (a host has one daemon): this one takes them up anew.
        for job_id, guest in self.store.release_steps(self.name):
            log.warning("job %d: %s was left mid-way by this host's last daemon; taking it up",
                        job_id, guest)  # fmt: skip
        self.fleet.joined()
        self.unpublished.changed(None)
        log.info("fleet: registered host %s (heartbeat every %ss)", self.name, self.fleet.heartbeat)

    async def _publish(self) -> None:
        everything, marked = self.unpublished.take()
        names = set(self.states) | set(self._published) if everything else marked
        unknown = [n for n in names if n in self.states and n not in self._uuids]
        if unknown:
            self._uuids.update(await asyncio.to_thread(self._read_uuids, unknown))
        at = time.time()
        seen = []
        for n in sorted(n for n in names if n in self.states):
            uuid = self._uuids.get(n, "")
            state = GuestState(
                n, self.name, uuid, self.states[n], self.ready(n), at, self.status(n)
            )
            if self._published.get(n) != _key(state):
                seen.append(state)
        gone = sorted(n for n in names if n not in self.states and n in self._published)
        if not (seen or gone):
            return
        if await self._call(self.store.publish_guests, self.name, seen, gone):
            for g in seen:
                self._published[g.guest] = _key(g)
            for n in gone:
                self._published.pop(n, None)
                self._uuids.pop(n, None)
        else:  # try again at the next beat
            self.unpublished.guests.update(names)

    def read_guests(self, guests: list[str]) -> None:
        """(In a thread.) The rows of ``guests`` on other hosts, now, added to what
        the fleet's last read kept."""
        self.fleet.seen(g for g in self.store.guest_states(guests=guests) if g.host != self.name)

    def looked_at(self) -> set[str]:
        """(On the loop.) The guests whose rows a read of the fleet keeps."""
        return set(self.states) | set(self.watched())

    def read_fleet(self, wanted: set[str]) -> None:
        """(In a thread.) The other hosts; the rows of the guests this daemon looks
        at (its own guests' names, for clashes; what they depend on), those
        written since the last read; and the names of the other hosts' guests
        written since (every FULL_READ_BEATS beats, of all of them): no rows of
        theirs, whose statuses are read on request."""
        started = time.time()
        full = self.fleet.read_at is None or self._beats % FULL_READ_BEATS == 0
        since = None if full or self.fleet.read_at is None else self.fleet.read_at - SLACK_S
        hosts = {h.name: h for h in self.store.hosts() if h.name != self.name}
        new = wanted - self._read_for
        me = self.name
        rows = self.store.guest_states(since=since, guests=wanted - new, other_than=me)
        if new:  # looked at from now on: read whole
            rows += self.store.guest_states(guests=new, other_than=me)
        # Every other host's guests by name: all of them at a full read; in between
        # those written since (a guest newly there), names only.
        named = {g for g, _ in self.store.guest_keys(since, other_than=me)}
        elsewhere = frozenset(named) if full else self.fleet.elsewhere | named
        # Copied on write: the loop reads the old mapping meanwhile. Only the guests
        # read now change, unless a host left or went (then all are looked at).
        away = {h for h in self.fleet.hosts if h not in hosts} | {
            n for n, h in hosts.items() if h.state == "left"
        }
        still = {} if full else {g: v for g, v in self.fleet.others.items() if g in wanted}
        others = merged(still, rows)
        for guest in list(others) if away else []:  # a host that left took its guests
            kept = {h: g for h, g in others[guest].items() if h not in away}
            if len(kept) != len(others[guest]):
                if kept:
                    others[guest] = kept
                else:
                    del others[guest]
        self.fleet.read(hosts, others, started, elsewhere)
        self._read_for = wanted
        self._beats += 1

    def _check_hosts(self) -> None:
        """(On the loop, after a read.) Tell of each host that came up, was lost or left."""
        now = time.time()
        for name, record in self.fleet.hosts.items():
            state = self.fleet.shown_state(record, now)
            if self._host_states.get(name, "up" if state == "up" else None) != state:
                age = f"last heartbeat {now - record.heartbeat_at:.0f} s ago"
                log.warning("fleet: host %s is %s (%s)", name, state, age)
                self.publish("host", host=name, state=state, detail=age)
                if state == "lost":
                    self._notice_lost(name, age)
            self._host_states[name] = state

    def _notice_lost(self, host: str, age: str) -> None:
        policies = self.policies()
        for guest in list(self.states):
            policy = policies.get(guest)
            if policy is None:
                continue
            for dep in [*policy.requires, *policy.wants]:
                if any(g.host == host for g, _ in self.fleet.where(dep.guest)):
                    self.notice(
                        guest,
                        f"{dep.guest}'s host {host} is lost ({age}); {guest} goes on: a lost"
                        " host is not a stopped guest",
                    )

    def _check_clashes(self) -> None:
        """(On the loop, after a read.) Guests whose clash began or ended: to check."""
        clashing = {
            g for g in self.states if self.fleet.clash(g, self._uuids.get(g, "")) is not None
        }
        if clashing != self._clashing:
            self.on_clash(clashing ^ self._clashing)
            self._clashing = clashing

    def _read_uuids(self, names: list[str]) -> dict[str, str]:
        found = {}
        for name in names:
            with contextlib.suppress(HypervisorError):  # gone: its undefine event follows
                found[name] = self.hypervisor.guest(name).uuid
        return found


def _key(state: GuestState) -> tuple[str, str, str]:
    """What decides whether a guest's row must be written again (not the time, nor
    when it was last checked: a pass that changed nothing writes nothing)."""
    status = (
        json.dumps({**state.status, "checked_at": None}, sort_keys=True)
        if state.status is not None
        else ""
    )
    return (state.uuid, state.state, status + json.dumps(dict(state.ready), sort_keys=True))
