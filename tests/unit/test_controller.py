"""The daemon's controller on an in-memory host: connection, passes, states, jobs.

No libvirt: :class:`virtpolicy.testing.MemoryHypervisor` stands in for it, and the
store is a temporary SQLite file. Enforcement on real libvirt is tested in
tests/integration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from virtpolicy.engine import changes
from virtpolicy.engine.daemon.controller import Controller
from virtpolicy.engine.daemon.settings import ControllerSettings
from virtpolicy.engine.daemon.supervisor import Backoff
from virtpolicy.engine.jobs import runner as jobrunner
from virtpolicy.engine.jobs.run import JobRequest
from virtpolicy.engine.runtime.bus import Event
from virtpolicy.errors import ConnectionLostError, StoreError
from virtpolicy.loopguard import guarded
from virtpolicy.policy.topology import Topology
from virtpolicy.store import SqlStore
from virtpolicy.testing import MemoryGuest, MemoryHypervisor

T = TypeVar("T")

SETTINGS = ControllerSettings(
    uri="memory:///",
    store_poll_interval=0.05,
    backoff=Backoff(initial=0.01, max=0.05),
    autostart=False,
    sample_interval=3600,
)


async def until(check: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll ``check`` on the loop until it gives something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.01)
    return value


def run_with(
    tmp_path: Path,
    guests: list[MemoryGuest],
    scenario: Callable[[Controller, MemoryHypervisor, SqlStore], Awaitable[None]],
    settings: ControllerSettings = SETTINGS,
    layout: Topology | None = None,
) -> None:
    """Run a controller on a MemoryHypervisor (store and host behind the loop guard) while
    ``scenario`` runs, then stop it."""

    async def main() -> None:
        store = SqlStore(str(tmp_path / "p.db"))
        host = MemoryHypervisor(guests, loop=asyncio.get_running_loop(), layout=layout)
        controller = Controller(guarded(store, "store"), guarded(host, "host"), settings)
        running = asyncio.create_task(controller.run())
        try:
            await until(controller.connected.is_set)
            await scenario(controller, host, store)
        finally:
            controller.stop()
            await running
            store.close()

    asyncio.run(main())


def test_a_written_policy_is_enforced(tmp_path: Path) -> None:
    """A policy written to the store reaches the running guest: pins and weight."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "db", {"cpu": {"vcpupin": {0: "2"}, "weight": 300}}, actor="t")
        db = host.guests_by_name["db"]
        # The pass writes pins, then weight, then the mirror, in a worker thread:
        # wait for the last of them before looking at the rest.
        await until(lambda: db.mirror is not None)
        assert db.vcpupin.get(0) == frozenset({2})
        assert db.sched["cpu_shares"] == 300
        assert db.mirror is not None
        assert db.mirror[0] == 1
        status = await until(lambda: [s for s in c.statuses() if s.guest == "db"])
        assert status[0].drift == {}

    run_with(tmp_path, [MemoryGuest("db", running=True)], scenario)


def test_a_write_through_the_api_is_enforced_without_reading_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API wrote reaches the guest from the revision it hands over: the
    daemon reads nothing back (here it could not: every read of policies fails)."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        await until(lambda: c.cache.revision is not None)
        reads: list[str] = []

        def unreachable(name: str) -> Callable[..., object]:
            def read(*_args: object, **_kwargs: object) -> object:
                reads.append(name)
                raise StoreError("the store does not answer")

            return read

        outcome = changes.set_policy(store, "db", {"cpu": {"weight": 300}}, actor="api")
        for name in ("revisions_since", "policies_and_broken", "global_revision"):
            monkeypatch.setattr(store, name, unreachable(name))
        assert outcome.written is not None
        c.notify([outcome.written])
        db = host.guests_by_name["db"]
        await until(lambda: db.sched.get("cpu_shares") == 300)
        assert c.policies()["db"].cpu.weight == 300

    run_with(tmp_path, [MemoryGuest("db", running=True)], scenario)


def test_a_lost_connection_is_reopened_and_everything_checked(tmp_path: Path) -> None:
    """After the connection drops, the controller reconnects and a full pass puts
    drift made meanwhile back."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "db", {"cpu": {"vcpupin": {0: "1"}}}, actor="t")
        db = host.guests_by_name["db"]
        await until(lambda: db.vcpupin.get(0) == frozenset({1}))
        passes = c.passes.count
        db.vcpupin[0] = frozenset({3})  # drift that no event reports
        host.drop()
        await until(lambda: host.opened >= 2 and c.passes.count > passes)
        await until(lambda: db.vcpupin.get(0) == frozenset({1}))

    run_with(tmp_path, [MemoryGuest("db", running=True)], scenario)


def test_hook_reports_and_events_keep_the_states(tmp_path: Path) -> None:
    """States come from the listing, then from events and hook reports, on the loop."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        assert dict(c.states) == {"db": "running", "web": "shut off"}
        c.hook_event("web", "started", "begin")
        assert c.states["web"] == "running"
        await asyncio.to_thread(host.destroy, "db")
        await until(lambda: c.states["db"] == "shut off")

    run_with(tmp_path, [MemoryGuest("db", running=True), MemoryGuest("web")], scenario)


def test_admission_follows_the_dependency(tmp_path: Path) -> None:
    """web requires db: refused while db is shut off, allowed once it runs; never asks
    the host or the store (both guarded: a call from the loop would fail)."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        await until(lambda: c.policies().get("web"))
        assert await c.admission("web") == ["web requires db (running): db is shut off"]
        await asyncio.to_thread(host.start, "db")
        await until(lambda: c.states.get("db") == "running")
        assert await c.admission("web") == []

    run_with(tmp_path, [MemoryGuest("db"), MemoryGuest("web")], scenario)


def test_admission_waits_for_the_daemons_own_probe(tmp_path: Path) -> None:
    """An agent condition is answered from the prober's result, not probed on request."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "web", {"requires": {"db": {"when": "agent"}}}, actor="t")
        await until(lambda: c.policies().get("web"))
        assert await c.admission("web") == [
            "web requires db (agent): guest agent of db does not answer: "
            "db: guest agent ping: not responding"
        ]
        host.guests_by_name["db"].agent = True
        c.prober.wake()  # the daemon's next round sees it; admission itself never probes
        await until(lambda: (c.prober.latest("db", "agent") or (0, "no"))[1] is None)
        assert await c.admission("web") == []

    guests = [MemoryGuest("db", running=True, agent=False), MemoryGuest("web")]
    run_with(tmp_path, guests, scenario)


def test_submitted_job_starts_in_order(tmp_path: Path) -> None:
    """A start job of the daemon starts db before web, and the job is recorded."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        await until(lambda: c.policies().get("web"))
        job = await c.jobs.submit(JobRequest(action="start", guests=["web"]), "tester")
        done = await until(lambda: (j := store.job(job["id"])).state != "running" and j)
        assert done.state == "succeeded"
        order = [r["guest"] for r in sorted(done.results, key=lambda r: r["seconds"])]
        assert order == ["db", "web"]
        assert host.guests_by_name["web"].running

    run_with(tmp_path, [MemoryGuest("db"), MemoryGuest("web")], scenario)


def test_submit_is_refused_while_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the connection down (and not back within the wait), a job is refused and
    nothing is recorded."""
    monkeypatch.setattr(jobrunner, "CONNECT_WAIT_S", 0.1)

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        host.open = host.close  # type: ignore[method-assign]  # libvirtd stays away
        host.drop()
        await until(lambda: not c.connected.is_set())
        with pytest.raises(ConnectionLostError):
            await c.jobs.submit(JobRequest(action="start", guests=["db"]), "tester")
        assert store.jobs() == []

    run_with(tmp_path, [MemoryGuest("db")], scenario)


def test_migration_is_neither_a_start_nor_a_stop(tmp_path: Path) -> None:
    """A guest that migrates away is not a stopped dependency (its dependents that
    say on_dependency_stop: stop go on); one that arrives gets its policy put
    back on arrival, and the event stream tells both."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "db", {"cpu": {"vcpupin": {0: "1"}}}, actor="t")
        changes.set_policy(
            store, "web", {"requires": {"db": {"when": "running"}}, "stop": {"on_dependency_stop": "stop"}},
            actor="t",
        )  # fmt: skip
        db = host.guests_by_name["db"]
        await until(lambda: db.vcpupin.get(0) == frozenset({1}))
        await asyncio.to_thread(host.migrate_out, "db")
        await until(lambda: c.states["db"] == "shut off")
        # It arrives elsewhere with that host's pinning; here, back with any other.
        # (Until it holds: a pass the migration out set off may still be running
        # on a loaded machine, and would put the pin back before it arrives.)
        while db.vcpupin.get(0) != frozenset({3}):
            db.vcpupin[0] = frozenset({3})
            await asyncio.sleep(0.3)  # what a stop would have set off has had its time
        assert host.guests_by_name["web"].running
        assert c.jobs._jobs == {}
        await asyncio.to_thread(host.migrate_in, "db")
        await until(lambda: db.vcpupin.get(0) == frozenset({1}))
        assert c.states["db"] == "running"

        async def seen() -> list[tuple[str, str | None, str | None]]:
            return [
                (e.kind, e.data.get("guest"), e.data.get("event"))
                async for e in _kept(c)
                if e.kind in ("lifecycle", "enforcement")
            ]

        # The pass's event reaches the loop after the pin it tells of.
        deadline = asyncio.get_running_loop().time() + 5
        while (events := await seen())[-1][0] != "enforcement":
            assert asyncio.get_running_loop().time() < deadline, events
            await asyncio.sleep(0.01)
        assert [e for e in events if e[0] == "lifecycle"] == [
            ("lifecycle", "db", "migrated out"),
            ("lifecycle", "db", "migrating in"),
            ("lifecycle", "db", "migrated in"),
        ]
        assert events[-1][:2] == ("enforcement", "db")

    guests = [MemoryGuest("db", running=True), MemoryGuest("web", running=True)]
    run_with(tmp_path, guests, scenario)


async def _kept(c: Controller) -> AsyncIterator[Event]:
    """The events the controller's bus kept so far."""
    last = c.events._next - 1
    async for event in c.events.subscribe(after=0):
        if event is None or event.id >= last:
            if event is not None:
                yield event
            return
        yield event


class _Away(MemoryHypervisor):
    """A libvirtd that does not answer (yet)."""

    def open(self) -> None:
        raise ConnectionLostError(f"{self.uri}: cannot connect: no libvirtd")


def test_before_it_connects_a_daemon_answers_for_guests_without_a_policy(tmp_path: Path) -> None:
    """A daemon that has just started (an upgrade's restart) and is not yet
    connected to libvirtd: a guest without a policy may start (there is nothing
    to ask libvirt), one with a policy cannot be told yet (ConnectionLostError:
    the hook asks again)."""

    async def main() -> None:
        store = SqlStore(str(tmp_path / "p.db"))
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        host = _Away([MemoryGuest("web")], loop=asyncio.get_running_loop())
        controller = Controller(guarded(store, "store"), guarded(host, "host"), SETTINGS)
        running = asyncio.create_task(controller.run())
        try:
            await until(lambda: controller.cache.revision is not None)
            assert not controller.connected.is_set()
            assert await controller.admission("nobody") == []
            with pytest.raises(ConnectionLostError, match="cannot tell whether web may start"):
                await controller.admission("web")
        finally:
            controller.stop()
            await running
            store.close()

    asyncio.run(main())


def test_a_sample_that_fails_unexpectedly_is_skipped_and_sampling_goes_on(
    tmp_path: Path,
) -> None:
    """A bug in reading one sample (here a ValueError from the hypervisor) is
    logged and shown in the sampler's health; the next sample is taken and the
    daemon goes on, as a failed pass does."""
    settings = dataclasses.replace(SETTINGS, sample_interval=1.0)
    failing = [True]

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        def before(method: str, _guest: str | None) -> None:
            if method == "sample" and failing and failing.pop():
                raise ValueError("not enough values to unpack (expected 1, got 0)")

        host.before = before
        await until(lambda: not failing and c.monitor.last_error, timeout=5)
        assert "sample failed: ValueError" in c.monitor.last_error
        taken = c.monitor.samples
        await until(lambda: c.monitor.samples > taken, timeout=5)  # the next one taken
        assert not c._stopping.is_set()

    run_with(tmp_path, [MemoryGuest("db", running=True)], scenario, settings)


def test_samples_are_taken_on_the_samplers_own_thread_which_ends_with_the_daemon(
    tmp_path: Path,
) -> None:
    """Each sample, its rates and the tuners' round run on the sampler's thread,
    not on the loop nor in its worker threads (the loop does not wake for a
    sample); the thread ends when the daemon stops, without waiting out its
    interval."""
    settings = dataclasses.replace(SETTINGS, sample_interval=0.05)
    where: set[str] = set()

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        host.before = lambda method, _guest: (
            where.add(threading.current_thread().name) if method == "sample" else None
        )
        await until(lambda: c.monitor.samples >= 3)
        assert c.monitor.latest is not None  # taken in, rates and all
        assert len(c.monitor.latest.host_busy_percent) == host.cpus

    run_with(tmp_path, [MemoryGuest("db", running=True)], scenario, settings)
    assert where == {"sampler"}
    # run_with has stopped the daemon: the thread has been told, and ends at once.
    deadline = time.monotonic() + 5
    while any(t.name == "sampler" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the sampler's thread outlived the daemon"
        time.sleep(0.01)


def test_the_newest_rates_are_kept_only_for_a_tuner_that_acts(tmp_path: Path) -> None:
    """The tuners' window of the newest rates (a minute of every guest's) is
    kept only while a tuner acts on it; ``static`` alone keeps the two the
    rates are made from."""

    async def main() -> None:
        store = SqlStore(str(tmp_path / "p.db"))
        host = MemoryHypervisor([MemoryGuest("web")])
        acting = dataclasses.replace(SETTINGS, tuners=("static", "balance"), sample_interval=5)
        kept = [
            Controller(store, host, settings).monitor.recent.maxlen
            for settings in (dataclasses.replace(SETTINGS, sample_interval=5), acting)
        ]
        assert kept == [2, 13]  # 60 s of 5 s samples, and the one before them

    asyncio.run(main())
