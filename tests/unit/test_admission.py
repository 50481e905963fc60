"""Admission across hosts and migration checks, from a fleet state in memory."""

from __future__ import annotations

import asyncio
import time

import pytest

from virtpolicy.engine.jobs.admission import migration_refusals, refusals
from virtpolicy.engine.jobs.prober import Prober
from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.errors import UnknownStateError
from virtpolicy.policy.model import parse_policy
from virtpolicy.store.base import GuestState, HostRecord, Revision
from virtpolicy.testing import MemoryHypervisor


class Probes:
    async def observed(self, guest: str, condition: str) -> str | None:
        return None if condition.startswith("tcp:") else f"{condition} failed here"


class Fleet:
    """Other hosts' guests, read at ``read_at``."""

    def __init__(self, guests: list[GuestState], read_at: float, stale: float | None = None):
        self.guests = guests
        self.read_at = read_at
        self._stale = stale
        beat = {"up": read_at, "lost": read_at - 60}
        self.hosts = {
            "host-a": HostRecord("host-a", "x", 4, {}, "v", "up", 2.0, beat["up"], "t"),
            "host-z": HostRecord("host-z", "x", 4, {}, "v", "up", 2.0, beat["lost"], "t"),
        }

    def where(self, guest: str) -> list[tuple[GuestState, HostRecord | None]]:
        return [(g, self.hosts.get(g.host)) for g in self.guests if g.guest == guest]

    def stale(self, now: float) -> float | None:
        return self._stale

    def as_of(self) -> float:
        return self.read_at


def state(guest: str, host: str, st: str = "running", **ready: bool) -> GuestState:
    return GuestState(guest, host, "u", st, {k.replace("_", ":"): v for k, v in ready.items()}, 0)


def ask(
    requires: list[dict[str, str]], fleet: Fleet, states: dict[str, str] | None = None
) -> list[str]:
    policy = parse_policy({"guest": "web", "requires": requires})
    return asyncio.run(refusals("web", policy, states or {}, Probes(), fleet))


NOW = time.time()


def test_a_dependency_elsewhere_is_judged_by_its_hosts_state() -> None:
    """Running on an up host: allowed; shut off there: refused naming the host;
    on no host at all: refused; agent as its own host last probed it."""
    fleet = Fleet(
        [
            state("db", "host-a"),
            state("old", "host-a", "shut off"),
            state("q", "host-a", agent=False),
        ],
        NOW,
    )
    assert ask([{"guest": "db"}], fleet) == []
    assert ask([{"guest": "old"}], fleet) == [
        "web requires old (running): old is shut off on host-a"
    ]
    assert ask([{"guest": "nowhere"}], fleet) == [
        "web requires nowhere (running): nowhere is not defined on this host or any other"
    ]
    assert ask([{"guest": "q", "when": "agent"}], fleet) == [
        "web requires q (agent): agent does not hold on host-a"
    ]
    assert ask([{"guest": "db", "when": "tcp:db:5432"}], fleet) == []  # probed from here


def test_a_lost_host_or_a_stale_state_cannot_tell_unless_something_refuses() -> None:
    """A dependency on a lost host, or any when the fleet state is stale, is
    UnknownStateError; a sure refusal of another dependency wins over it."""
    fleet = Fleet([state("db", "host-z"), state("old", "host-a", "shut off")], NOW)
    with pytest.raises(UnknownStateError, match=r"db's host host-z is lost \(last heartbeat"):
        ask([{"guest": "db"}], fleet)
    assert ask([{"guest": "db"}, {"guest": "old"}], fleet) == [
        "web requires old (running): old is shut off on host-a"
    ]
    stale = Fleet([state("db", "host-a")], NOW, stale=9.0)
    with pytest.raises(UnknownStateError, match="the fleet's state is 9 s old"):
        ask([{"guest": "db"}], stale)
    # A guest on this host is answered from here, whatever the fleet's state.
    assert ask([{"guest": "db"}], stale, {"db": "running"}) == []


def test_migration_refuses_fixed_pins_beyond_this_host() -> None:
    """Fixed pins (vcpupin, vcpus, emulatorpin) onto CPUs this host lacks refuse a
    migration here, each naming its field; auto placement and fitting pins do not."""
    big = parse_policy({"guest": "g", "cpu": {"vcpupin": {"1": "6"}, "emulatorpin": "0-5"}})
    assert migration_refusals("g", big, 4) == [
        "g: cpu.vcpupin.1 = 6 names host CPUs this host lacks (it has 4: 0-3);"
        " pin it for this host, or use cpu.vcpus: auto",
        "g: cpu.emulatorpin = 0-5 names host CPUs this host lacks (it has 4: 0-3);"
        " pin it for this host, or use cpu.vcpus: auto",
    ]
    assert migration_refusals("g", big, 8) == []
    auto = parse_policy({"guest": "g", "cpu": {"vcpus": "auto", "allowed": "0-63"}})
    assert migration_refusals("g", auto, 4) == []
    assert migration_refusals("g", None, 4) == []


def test_a_write_about_other_hosts_guests_does_not_wake_the_probes() -> None:
    """Probes here wake for a policy of a guest here, or one that requires a guest
    here (its agent is asked from here), or a delete; not for the rest of a fleet."""

    states = GuestStates()
    states.replace({"db": "running", "web": "shut off"})

    def rev(guest: str, requires: list[str] | None) -> Revision:
        policy = (
            None
            if requires is None
            else parse_policy({"guest": guest, "requires": [{"guest": d} for d in requires]})
        )
        return Revision(1, guest, 1, "update", "t", "now", policy)

    async def woken(revisions: list[Revision] | None) -> bool:
        prober = Prober(MemoryHypervisor([]), states, dict)  # no probe runs here
        prober.written(revisions)
        return prober._wake.is_set()

    def wakes(revisions: list[Revision] | None) -> bool:
        return asyncio.run(woken(revisions))

    assert wakes(None)
    assert wakes([rev("web", ["elsewhere"])])
    assert wakes([rev("api", ["db"])])
    assert wakes([rev("gone", None)])
    assert not wakes([rev("api", ["cache"]), rev("cache", [])])


def test_a_condition_that_cannot_be_probed_is_its_guests_problem_only() -> None:
    """A stored condition the resolver chokes on (as older versions accepted: a
    64-character label) is that edge's result; the prober goes on and probes the
    others. It once raised UnicodeError out of the prober, which ended the daemon."""
    from virtpolicy.policy.model import Dependency, GuestPolicy  # noqa: PLC0415

    bad_when = "tcp:" + "a" * 64 + ":80"

    async def scenario() -> tuple[str | None, str | None, bool]:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        good_when = f"tcp:127.0.0.1:{port}"
        policies = {
            "web": GuestPolicy.model_construct(
                guest="web",
                requires=(
                    Dependency.model_construct(guest="db", when=bad_when, timeout=5),
                    Dependency.model_construct(guest="cache", when=good_when, timeout=5),
                ),
            )
        }
        states = GuestStates()
        states.replace({"db": "running", "cache": "running", "web": "shut off"})
        prober = Prober(MemoryHypervisor([]), states, lambda: policies)
        task = asyncio.create_task(prober.run())
        bad = await prober.observed("db", bad_when)
        good = await prober.observed("cache", good_when)
        alive = not task.done()
        task.cancel()
        server.close()
        return bad, good, alive

    bad, good, alive = asyncio.run(scenario())
    assert alive
    assert good is None
    assert bad is not None
    assert "a" * 64 in bad
