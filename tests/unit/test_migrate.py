"""``virtpolicy migrate`` without libvirt: the destination's verdict from what the
hosts published (a real SQLite store), a record of room that reads back the
same or not at all, the job's steps on an in-memory hypervisor, and the
stream's parameters. The real migrations are in tests/integration/test_migration.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.engine.jobs.migrate import destination_refusals
from virtpolicy.engine.jobs.run import JobRequest, JobRun, parse_job_request
from virtpolicy.errors import PolicyError
from virtpolicy.hypervisor.migration import parameters, published_uri
from virtpolicy.policy.model import GuestPolicy, parse_policy
from virtpolicy.policy.placement import Request, place
from virtpolicy.policy.room import from_record, room_for, to_record
from virtpolicy.policy.topology import Topology
from virtpolicy.store import SqlStore
from virtpolicy.store.base import GuestState, HostRecord
from virtpolicy.testing import MemoryGuest, MemoryHypervisor

#: How host-b takes migrations, as its daemon publishes it.
TAKES = {"uri": "qemu+ssh://b/system", "stream": "unix:///run/b.sock"}


def host_b_room(held: int) -> dict[str, Any]:
    """host-b's placement as published: 4 CPUs, ``held`` of them dedicated to x."""
    topology = Topology.regular(1, 1, 4, 1)
    placement = place(topology, frozenset(), [Request("x", held, "dedicated")] if held else [])
    return {"guests": {}, "room": to_record(topology, frozenset(), placement, bool(held))}


def fleet(tmp_path: Path, *, held: int = 0, b_state: str = "up", takes: bool = True) -> SqlStore:
    """host-a runs ded (2 vCPUs, dedicated); host-b as told."""
    store = SqlStore(str(tmp_path / "p.db"))
    now = time.time()
    a = HostRecord("host-a", "qemu:///system", 4, {}, "t", "up", 60.0, now, "t", migration=TAKES)
    b = HostRecord("host-b", "qemu:///system", 4, {}, "t", "up", 60.0, now, "t",
                   migration=TAKES if takes else None)  # fmt: skip
    store.register_host(a)
    store.register_host(b)
    store.heartbeat("host-a", placement={"guests": {"ded": {"vcpupin": {"0": "0", "1": "1"}}}})
    store.heartbeat("host-b", placement=host_b_room(held))
    if b_state == "left":
        store.leave_host("host-b")
    store.publish_guests("host-a", [GuestState("ded", "host-a", "u", "running", {}, now)], [])
    return store


DED = parse_policy({"guest": "ded", "cpu": {"placement": "dedicated"}})


@pytest.mark.parametrize(
    ("setup", "to", "policy", "expected"),
    [
        ({}, "host-b", DED, []),
        ({"held": 3}, "host-b", DED, ["no room on host-b: ded: needs 2 dedicated host CPUs"]),
        ({}, "host-c", DED, ["host-c: no such host in the fleet"]),
        ({"b_state": "left"}, "host-b", DED, ["host-b is left: no daemon there to take ded"]),
        ({}, "host-a", DED, ["ded runs on host-a already"]),
        ({"takes": False}, "host-b", DED, ["host-b takes no migrations"]),
        (
            {},
            "host-b",
            parse_policy({"guest": "ded", "cpu": {"vcpupin": {"0": "6"}}}),
            ["ded: cpu.vcpupin.0 = 6 names host CPUs this host lacks (it has 4: 0-3)"],
        ),
    ],
)
def test_the_destination_as_it_published_itself(
    tmp_path: Path, setup: dict[str, Any], to: str, policy: GuestPolicy, expected: list[str]
) -> None:
    store = fleet(tmp_path, **setup)
    try:
        verdict = destination_refusals(store, "ded", to, policy)
    finally:
        store.close()
    assert len(verdict.reasons) == len(expected), verdict
    for found, start in zip(verdict.reasons, expected, strict=True):
        assert found.startswith(start), (found, start)


def test_a_guest_that_runs_nowhere_does_not_migrate(tmp_path: Path) -> None:
    store = fleet(tmp_path)
    store.publish_guests("host-a", [], ["ded"])
    try:
        assert destination_refusals(store, "ded", "host-b", DED).reasons == [
            "ded runs on no host that is up: only a running guest migrates"
        ]
        # ... unless libvirt here says it runs (fresher than this host's last beat).
        assert destination_refusals(store, "ded", "host-b", DED, "host-a").reasons == []
    finally:
        store.close()


def test_the_room_record_reads_back_as_it_was_written() -> None:
    topology = Topology.regular(2, 1, 2, 2)
    placement = place(topology, frozenset({0}), [Request("x", 2, "dedicated")])
    record = json.loads(json.dumps(to_record(topology, frozenset({0}), placement, True)))
    back = from_record(record)
    assert back is not None
    assert back[0].cpus == topology.cpus
    assert (back[1], back[2], back[3]) == (frozenset({0}), placement.guests, True)
    x = Request("y", 6, "dedicated")
    assert room_for(*back[:3], x, True) == room_for(
        topology, frozenset({0}), placement.guests, x, True
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(
    st.fixed_dictionaries(
        {"in_play": JSON, "cpus": JSON, "memory": JSON, "reserved": JSON, "dedicated": JSON}
    )
    | JSON
)
def test_a_room_record_of_any_shape_reads_back_or_is_set_aside(record: object) -> None:
    """A host's row is written by its daemon, or by hand: either a room to place
    in, or None (the destination's hook then decides), never an exception."""
    back = from_record(record)
    if back is not None:
        room_for(*back[:3], Request("y", 1, "dedicated"), back[3])


def test_a_migrate_job_names_its_guests_and_its_host() -> None:
    assert parse_job_request({"action": "migrate", "guests": ["g"], "to": "b"}).to == "b"
    for bad, field in [
        ({"action": "migrate", "guests": ["g"]}, "to"),
        ({"action": "start", "guests": ["g"], "to": "b"}, "to"),
        ({"action": "migrate", "all": True, "to": "b"}, "guests"),
        ({"action": "migrate", "guests": ["g"], "to": "a/b"}, 'to: "a/b" is not a host name'),
    ]:
        with pytest.raises(PolicyError) as caught:
            parse_job_request(bad)
        assert str(caught.value).startswith(field), caught.value


def test_a_migrate_job_moves_its_guest_or_says_why_not(tmp_path: Path) -> None:
    """The step on the guest's host: refused with the destination's reason and
    nothing moved, or libvirt asked to migrate it to the published URI."""
    store = fleet(tmp_path, held=3)
    loop = asyncio.new_event_loop()
    hypervisor = MemoryHypervisor([MemoryGuest("ded", vcpus=2, running=True)], loop=loop)
    hypervisor.open()

    async def ask(guest: str, to: str) -> Any:
        return destination_refusals(store, guest, to, DED)

    def job() -> Any:
        request = JobRequest(action="migrate", guests=["ded"], to="host-b")
        run = JobRun(store, hypervisor, request, "test", "daemon", ask=ask)
        run.record()
        return loop.run_until_complete(run.run())

    try:
        refused = job()
        assert refused.state == "failed"
        [step] = refused.results
        assert step["result"] == "refused"
        assert step["detail"].startswith("no room on host-b: ded: needs 2 dedicated"), step
        assert hypervisor.migrated == []

        store.heartbeat("host-b", placement=host_b_room(0))
        moved = job()
        assert moved.state == "succeeded", moved
        assert [r["result"] for r in moved.results] == ["migrated"]
        assert hypervisor.migrated == [("ded", TAKES["uri"], TAKES["stream"])]
        assert "ded" not in hypervisor.guests_by_name
    finally:
        store.close()
        loop.close()


def test_the_stream_crosses_a_network_only_with_tls() -> None:
    uri, tls = libvirt.VIR_MIGRATE_PARAM_URI, libvirt.VIR_MIGRATE_TLS
    listen = libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS
    params, flags = parameters("unix:///run/x.sock")
    assert params == {uri: "unix:///run/x.sock"}
    assert not flags & tls
    params, flags = parameters("tcp://127.0.0.1:49152")
    assert (params[listen], bool(flags & tls)) == ("127.0.0.1", False)
    params, flags = parameters("tcp://10.0.0.2")
    assert (params[listen], bool(flags & tls)) == ("10.0.0.2", True)
    params, flags = parameters(None)  # libvirt's default: the host's name, over TCP
    assert params == {}
    assert flags & tls
    assert flags & libvirt.VIR_MIGRATE_PEER2PEER
    assert flags & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


def test_the_uri_other_hosts_reach_this_one_by(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "node7")
    assert published_uri("qemu:///system", None) == "qemu+ssh://node7/system"
    assert published_uri("qemu+tcp://h1/system", None) == "qemu+tcp://h1/system"
    assert published_uri("qemu:///session", None) is None
    assert published_uri("test:///x", None) is None
    assert published_uri("qemu:///system", "qemu+tls://n7/system") == "qemu+tls://n7/system"
