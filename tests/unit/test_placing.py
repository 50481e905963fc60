"""The daemon places guests: on a MemoryHypervisor with two NUMA nodes and SMT.

Host: 2 nodes x 4 cores x 2 threads, numbered as Linux does: core k has threads
k and k+8; node 0 holds cores 0-3 (CPUs 0-3, 8-11), node 1 cores 4-7 (CPUs 4-7,
12-15). CPUs 0 and 1 are reserved: node 0 has two whole cores left.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from tests.unit.test_controller import SETTINGS, run_with, until
from virtpolicy.engine import changes
from virtpolicy.engine.daemon.controller import Controller
from virtpolicy.policy.model import parse_policy
from virtpolicy.policy.placement import Request, place
from virtpolicy.policy.topology import Topology
from virtpolicy.store import SqlStore
from virtpolicy.testing import MemoryGuest, MemoryHypervisor

LAYOUT = Topology.regular(nodes=2, sockets=1, cores=4, threads=2)
RESERVED = frozenset({0, 1})
PLACED = dataclasses.replace(SETTINGS, reserved=RESERVED)
DEDICATED = {"cpu": {"placement": "dedicated", "threads": "isolate"}, "numa": {"nodes": 1}}


def test_a_dedicated_guest_is_pinned_in_its_definition_before_it_starts(tmp_path: Path) -> None:
    """db is shut off: its pins and <numatune> are written to its definition (the
    MemoryHypervisor keeps what apply writes); web, shared, leaves db's cores alone."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        db, web = host.guests_by_name["db"], host.guests_by_name["web"]
        changes.set_policy(store, "web", {"cpu": {"weight": 200}}, actor="t")
        matched = {**DEDICATED, "cpu": {**DEDICATED["cpu"], "topology": "match"}}
        changes.set_policy(store, "db", matched, actor="t")
        await until(lambda: db.numatune is not None and len(db.vcpupin) == 2)
        await until(lambda: db.topology == (1, 2, 1))  # a core each: one thread per core
        cpus = set().union(*db.vcpupin.values())
        assert len(cpus) == 2
        assert len({LAYOUT.cpu(x).core_key for x in cpus}) == 2  # isolate: a core each
        assert {LAYOUT.cpu(x).node for x in cpus} == set(db.numatune[1])
        assert db.numatune[0] == "strict"
        held = {t for x in cpus for t in LAYOUT.siblings(x)}  # siblings kept idle too
        pool = frozenset(range(16)) - RESERVED - held
        await until(lambda: web.vcpupin == {0: pool, 1: pool})
        assert web.emulatorpin == pool
        status = await until(
            lambda: [s for s in c.statuses() if s.guest == "db" and s.actual.vcpupin]
        )
        assert status[0].drift == {}
        assert status[0].problems == []
        # What the daemon did is what the placer says for the same input.
        requests = [Request("web", 2), Request("db", 2, "dedicated", "isolate", nodes=1)]
        plan = place(LAYOUT, RESERVED, requests)
        assert plan.guests["db"].vcpupin == tuple(db.vcpupin[v] for v in range(2))

    guests = [MemoryGuest("db"), MemoryGuest("web", running=True)]
    run_with(tmp_path, guests, scenario, PLACED, LAYOUT)


def test_a_start_that_cannot_be_placed_is_refused_with_the_reason(tmp_path: Path) -> None:
    """big asks for 4 isolated cores in one node; db and batch hold node 1's four,
    node 0 has two whole cores left: admission refuses big's start, naming why."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "db", DEDICATED, actor="t")
        changes.set_policy(store, "batch", DEDICATED, actor="t")
        changes.set_policy(store, "big", DEDICATED, actor="t")
        await until(lambda: c.reconciler.placing.refusal("big"))
        reasons = await c.admission("big")
        assert reasons == [
            "big: needs 4 dedicated cores with isolated siblings in 1 NUMA node; "
            "node 0 has 2 free, node 1 has 0 free (batch holds 4, db holds 4 of its CPUs)"
        ]
        assert await c.admission("db") == []
        status = await until(lambda: [s for s in c.statuses() if s.guest == "big"])
        assert f"placement refused: {reasons[0]}" in status[0].problems
        assert host.guests_by_name["big"].vcpupin == {}  # nothing pinned for it

    guests = [MemoryGuest("db", running=True), MemoryGuest("batch"), MemoryGuest("big", vcpus=4)]
    run_with(tmp_path, guests, scenario, PLACED, LAYOUT)


def test_a_restarted_daemon_keeps_dedicated_guests_where_their_pins_are(tmp_path: Path) -> None:
    """zz sits on node 1's last cores (pins from before); a new daemon reads them
    back and keeps it there, though by name it would have come first."""
    zz = MemoryGuest("zz", running=True, vcpupin={0: frozenset({12}), 1: frozenset({14})}, vcpus=2)

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "zz", DEDICATED, actor="t")
        changes.set_policy(store, "aa", DEDICATED, actor="t")
        aa = host.guests_by_name["aa"]
        await until(lambda: len(aa.vcpupin) == 2)
        await asyncio.sleep(0.1)
        assert zz.vcpupin == {0: frozenset({12}), 1: frozenset({14})}
        assert zz.numatune == ("strict", frozenset({1}))
        cores = {LAYOUT.cpu(x).core_key for pins in aa.vcpupin.values() for x in pins}
        assert cores.isdisjoint({LAYOUT.cpu(12).core_key, LAYOUT.cpu(14).core_key})

    run_with(tmp_path, [zz, MemoryGuest("aa", running=True)], scenario, PLACED, LAYOUT)


def test_without_placement_in_play_nothing_changes(tmp_path: Path) -> None:
    """No reserved CPUs, no dedicated or NUMA policy: a shared guest's pins stay the
    policy's alone (here: none), as before placement existed."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        changes.set_policy(store, "web", {"cpu": {"weight": 300}}, actor="t")
        web = host.guests_by_name["web"]
        await until(lambda: web.sched.get("cpu_shares") == 300)
        assert web.vcpupin == {}
        assert web.emulatorpin is None
        assert c.reconciler.placing.view()["in_play"] is False

    run_with(tmp_path, [MemoryGuest("web", running=True)], scenario, SETTINGS, LAYOUT)


def test_when_placement_falls_out_of_play_the_pool_is_lifted(tmp_path: Path) -> None:
    """db dedicated: web floats over what db leaves. db's policy replaced by a
    shared one (and nothing reserved): web gets every host CPU back, and so
    does db."""

    async def scenario(c: Controller, host: MemoryHypervisor, store: SqlStore) -> None:
        web, db = host.guests_by_name["web"], host.guests_by_name["db"]
        changes.set_policy(store, "web", {"cpu": {"weight": 200}}, actor="t")
        changes.set_policy(store, "db", DEDICATED, actor="t")
        every = frozenset(range(16))
        await until(lambda: web.vcpupin and web.vcpupin[0] != every)
        assert len(web.vcpupin[0]) == 12  # db's two cores (four CPUs) are not in it
        shared = parse_policy({"guest": "db", "cpu": {"weight": 100}})  # the whole policy
        changes.put_policy(store, shared, actor="t")
        await until(lambda: web.vcpupin == {0: every, 1: every} and web.emulatorpin == every)
        await until(lambda: db.vcpupin == {0: every, 1: every})
        assert c.reconciler.placing.view()["in_play"] is False

    guests = [MemoryGuest("db", running=True), MemoryGuest("web", running=True)]
    run_with(tmp_path, guests, scenario, SETTINGS, LAYOUT)
