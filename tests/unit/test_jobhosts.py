"""A job places each guest on its host, even one the daemon's last read of the
fleet has not seen yet: a host publishes its guests between two beats of the
others, and a job asked for meanwhile must not run that guest here."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from virtpolicy.engine.fleet.membership import Fleet
from virtpolicy.engine.jobs.run import JobRequest, JobRun
from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store import SqlStore
from virtpolicy.store.base import GuestState, HostRecord, Put
from virtpolicy.testing import MemoryGuest, MemoryHypervisor


def _run(
    store: SqlStore, fleet: Fleet, guests: list[str], loop: asyncio.AbstractEventLoop
) -> JobRun:
    hypervisor = MemoryHypervisor([MemoryGuest("db", running=False)], loop=loop)
    return JobRun(
        store, hypervisor, JobRequest(action="start", guests=guests), "test", "daemon", fleet=fleet
    )


def test_a_guest_published_since_the_last_read_runs_on_its_host(tmp_path: Path) -> None:
    store, loop = SqlStore(str(tmp_path / "p.db")), asyncio.new_event_loop()
    try:
        for guest in ("db", "web", "nowhere"):
            store.write([Put(GuestPolicy(guest=guest))], "test")
        now = time.time()
        store.register_host(HostRecord("b", "test:///x", 4, {}, "t", "up", 60.0, now, "t"))
        store.publish_guests("b", [GuestState("web", "b", "u-web", "shut off", {}, now)], [])
        states = GuestStates()
        states.replace({"db": "shut off"})
        fleet = Fleet("a", 60.0, states)  # joined, but the fleet not read yet
        fleet.joined()
        assert fleet.host_of("web") is None

        job = _run(store, fleet, ["db", "web", "nowhere"], loop).record()

        # db is here; web is b's; a guest defined nowhere stays with the job's host
        # (where it fails, saying there is no such guest).
        assert dict(job.hosts) == {"db": "a", "web": "b", "nowhere": "a"}
    finally:
        store.close()
        loop.close()
