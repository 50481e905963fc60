"""In a fleet a daemon holds its own guests' policies only (and those they
depend on), and of other hosts' guests' states only those it looks at: what
other hosts' guests cost it is counted, not timed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.unit.test_controller import SETTINGS, until
from virtpolicy.engine import changes
from virtpolicy.engine.daemon.controller import Controller
from virtpolicy.loopguard import guarded
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store import SqlStore
from virtpolicy.store.base import GuestState, HostRecord
from virtpolicy.testing import MemoryGuest, MemoryHypervisor

OTHERS = 5000


def _host_b(store: SqlStore, guests: list[str]) -> None:
    now = time.time()
    store.register_host(HostRecord("b", "test:///b", 4, {}, "t", "up", 60.0, now, "t"))
    store.publish_guests(
        "b", [GuestState(g, "b", f"u-{g}", "running", {}, now) for g in guests], []
    )


def test_other_hosts_policies_are_neither_decoded_nor_held(tmp_path: Path) -> None:
    """5,000 policies written for another host's guests change neither what the
    daemon decodes nor what it holds; its own guest's dependency on that host is
    held; a guest defined here later has its policy read then, and enforced."""
    elsewhere = [f"b{i:04}" for i in range(OTHERS)]

    async def main() -> None:
        store = SqlStore(str(tmp_path / "p.db"))
        _host_b(store, ["db", "mover", *elsewhere])
        changes.set_policy(store, "db", {"cpu": {"weight": 50}}, actor="t")
        changes.set_policy(store, "mover", {"cpu": {"weight": 400}}, actor="t")
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        host = MemoryHypervisor([MemoryGuest("web", running=True)], loop=asyncio.get_running_loop())
        c = Controller(guarded(store, "store"), guarded(host, "host"), SETTINGS)
        running = asyncio.create_task(c.run())
        try:
            await until(c.connected.is_set)
            await until(lambda: c.cache.revision == store.global_revision())
            # web's, and db's (web requires it); not mover's, which is b's.
            assert sorted(c.cache.all()) == ["db", "web"]
            decoded = c.cache.decoded
            # Of b's guests, the daemon keeps the row of db (web depends on it) and
            # the names of the others: no row of theirs.
            await until(lambda: "db" in c.fleet.others)
            assert set(c.fleet.others) == {"db"}
            assert len(c.fleet.elsewhere) == OTHERS + 2

            policies = [GuestPolicy(guest=g, cpu={"weight": 200}) for g in elsewhere]
            changes.apply_policies(store, policies, actor="t")
            target = store.global_revision()
            await until(lambda: c.cache.revision == target, timeout=30)
            assert c.cache.decoded == decoded
            assert sorted(c.cache.all()) == ["db", "web"]
            # No page asked for every guest's: none of theirs held for pages either.
            assert c.host_info()["policies"] == {
                "held": 2,
                "decoded": decoded,
                "held_for_pages": 0,
            }

            # Defined here (it moved from b): its policy is read, and enforced.
            host.define(MemoryGuest("mover"))
            mover = host.guests_by_name["mover"]
            await until(lambda: mover.sched.get("cpu_shares") == 400)
            assert c.cache.decoded == decoded + 1
            # The API's graph still reads every policy in the fleet, on request.
            assert len(await c.every_policy()) == OTHERS + 3
        finally:
            c.stop()
            await running
            store.close()

    asyncio.run(main())
