"""Enforcement on libvirt's test driver, with the project's own node XML."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtpolicy.engine import changes
from virtpolicy.engine.tuning.reconcile import Reconciler
from virtpolicy.errors import GuestNotFoundError
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.hypervisor.native import Tuning, shown
from virtpolicy.policy.cpuset import format_cpuset
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration

NODE = Path(__file__).parent / "nodes" / "host4.xml"


@pytest.fixture
def hv() -> Iterator[LibvirtConnection]:
    """A fresh connection: each test-driver connection has its own state."""
    h = LibvirtConnection(f"test://{NODE}")
    h.open()
    yield h
    h.close()


def pins(hv: LibvirtConnection, guest: str) -> dict[int, str]:
    """vCPU pinning as libvirt reports it, in cpuset spelling."""
    return {v: format_cpuset(c) if c else "" for v, c in hv.actual(guest).vcpupin.items()}


def test_host_cpus_come_from_the_node(hv: LibvirtConnection) -> None:
    """The host has the 4 CPUs of our node XML, not getCPUMap's fixed 8."""
    assert hv.node().cpus == 4
    assert hv.node().scheduler == "none"
    assert {g.name: g.vcpus for g in hv.guests()} == {"db": 2, "web": 2, "api": 1}


def test_the_test_drivers_topology_is_derived_from_the_node(hv: LibvirtConnection) -> None:
    """The test driver reports no NUMA cells for a node file of our own: the
    topology is derived from the node info (1 node, 1 socket, 4 cores, 1 thread)."""
    layout = hv.node().layout
    assert layout is not None
    assert (layout.source, layout.nodes, layout.smt, len(layout.cpus)) == (
        "derived from node info",
        (0,),
        1,
        4,
    )


def test_enforce_pins_and_mirrors(store: SqlStore, hv: LibvirtConnection) -> None:
    """A pass pins the vCPUs and emulator and mirrors the policy into <metadata>."""
    changes.set_policy(
        store, "db", {"cpu": {"vcpupin": {"0": "1"}, "vcpus": "2-3", "emulatorpin": "0"}}, actor="t"
    )
    [status] = Reconciler(store, hv).reconcile()
    assert pins(hv, "db") == {0: "1", 1: "2-3"}
    assert hv.actual("db").emulatorpin == frozenset({0})
    assert status.drift == {}
    assert shown(status.applied)["vcpupin.1"] == ("0-3", "2-3")
    assert hv.read_mirror("db") == (1, store.get("db").policy)
    xml = hv.conn.lookupByName("db").XMLDesc(0)
    assert '<virtpolicy:policy xmlns:virtpolicy="urn:virtpolicy:policy:1" revision="1">' in xml


def test_drift_is_put_back(store: SqlStore, hv: LibvirtConnection) -> None:
    """A hand-made re-pin through libvirt is undone by the next pass in enforce mode."""
    changes.set_policy(store, "web", {"cpu": {"vcpus": "3"}}, actor="t")
    reconciler = Reconciler(store, hv)
    reconciler.reconcile()
    hv.conn.lookupByName("web").pinVcpuFlags(1, (True, True, False, False), 0)
    assert pins(hv, "web") == {0: "3", 1: "0-1"}
    [status] = reconciler.reconcile(["web"])
    assert pins(hv, "web") == {0: "3", 1: "3"}
    assert shown(status.applied) == {"vcpupin.1": ("0-1", "3")}


def test_report_mode_only_reports(store: SqlStore, hv: LibvirtConnection) -> None:
    """In report mode the drift is recorded and libvirt is left as it is."""
    changes.set_policy(store, "web", {"cpu": {"vcpus": "3"}}, actor="t")
    [status] = Reconciler(store, hv, mode="report").reconcile()
    assert pins(hv, "web") == {0: "0-3", 1: "0-3"}
    assert shown(status.drift) == {"vcpupin.0": ("0-3", "3"), "vcpupin.1": ("0-3", "3")}
    assert status.applied == {}


def test_unsupported_and_impossible_are_reported(store: SqlStore, hv: LibvirtConnection) -> None:
    """Weight on the test driver and a pin to a missing CPU become status problems."""
    changes.set_policy(store, "api", {"cpu": {"weight": 200, "emulatorpin": "7"}}, actor="t")
    [status] = Reconciler(store, hv).reconcile()
    assert status.problems == [
        "cpu.emulatorpin: CPU 7 does not exist: the host has 4 CPUs (0-3)",
        "cpu.weight: not supported by the test driver",
    ]
    assert status.error is None
    assert hv.actual("api").emulatorpin == frozenset({0, 1, 2, 3})


def test_policy_for_undefined_guest_waits(store: SqlStore, hv: LibvirtConnection) -> None:
    """A policy may exist before its guest; it is reported as undefined, no error."""
    changes.set_policy(store, "later", {"cpu": {"vcpus": "1"}}, actor="t")
    [status] = Reconciler(store, hv).reconcile()
    assert (status.state, status.error) == ("undefined", None)


def test_removing_pinning_unpins(store: SqlStore, hv: LibvirtConnection) -> None:
    """Clearing a pin in the policy frees the vCPU again (the mirror remembers it)."""
    changes.set_policy(store, "db", {"cpu": {"vcpus": "2"}}, actor="t")
    reconciler = Reconciler(store, hv)
    reconciler.reconcile()
    assert pins(hv, "db") == {0: "2", 1: "2"}
    changes.set_policy(store, "db", {"cpu": {"vcpus": None}, "labels": {"x": "y"}}, actor="t")
    reconciler.reconcile()
    assert pins(hv, "db") == {0: "0-3", 1: "0-3"}


def test_guests_without_policy_are_left_alone(store: SqlStore, hv: LibvirtConnection) -> None:
    """Only guests with a policy are touched."""
    changes.set_policy(store, "db", {"cpu": {"vcpus": "1"}}, actor="t")
    before = hv.actual("web")
    Reconciler(store, hv).reconcile()
    assert hv.actual("web") == before
    assert before == Tuning(
        vcpupin={0: frozenset(range(4)), 1: frozenset(range(4))}, emulatorpin=frozenset(range(4))
    )


def big_node(path: Path, cpus: int, guests: int) -> Path:
    """A test-driver node file with ``cpus`` CPUs and ``guests`` running 1-vCPU guests."""
    domains = "".join(
        f"<domain type='test'><name>g{i:03d}</name><memory>65536</memory><vcpu>1</vcpu>"
        f"<os><type>hvm</type></os></domain>"
        for i in range(guests)
    )
    path.write_text(
        f"<node><cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cpus}</cores><threads>1</threads><active>{cpus}</active><max>{cpus}</max>"
        f"</cpu><memory>8388608</memory>{domains}</node>"
    )
    return path


def test_many_guests_beyond_the_cpu_map_are_each_reported(tmp_path: Path) -> None:
    """A node of 64 CPUs with 500 guests pinned across them: the test driver pins only
    within its 8-CPU map, so the host has 8 CPUs to pin on; guests pinned to 0-7 are
    enforced, the others each get a problem on their status, and the pass covers all 500."""
    node = big_node(tmp_path / "node64.xml", 64, 500)
    store = SqlStore(str(tmp_path / "p.db"))
    hv = LibvirtConnection(f"test://{node}")
    hv.open()
    try:
        assert hv.node().cpus == 8
        for i in range(500):
            changes.set_policy(
                store, f"g{i:03d}", {"cpu": {"vcpupin": {0: str(i % 64)}}}, actor="t"
            )
        statuses = {s.guest: s for s in Reconciler(store, hv).reconcile()}
        assert len(statuses) == 500
        for i in range(500):
            s = statuses[f"g{i:03d}"]
            assert s.error is None, s.error
            if i % 64 < 8:
                assert (s.actual.vcpupin.get(0), s.drift) == (frozenset({i % 64}), {}), s
            else:
                assert any("does not exist: the host has 8 CPUs" in p for p in s.problems), s
    finally:
        hv.close()
        store.close()


def test_a_guest_defined_anew_is_not_reached_through_its_old_handle(hv: LibvirtConnection) -> None:
    """web undefined and defined again under the same name (a new UUID): the old
    handle, kept from the listing, answered "no such guest" for ever after. Now
    the first such answer drops it, and the next call finds the new guest."""
    hv.guests()  # keeps a handle of each guest
    old = hv.conn.lookupByName("web")
    xml = old.XMLDesc(0)
    old.destroy()
    old.undefine()
    fresh = xml.replace(old.UUIDString(), "7a0c3e11-0c2e-4c55-9d11-5c1e3a7f0fff")
    hv.conn.defineXML(fresh).create()
    # A pass says it runs (from the listing), so the kept handle is used.
    with pytest.raises(GuestNotFoundError):  # through the handle of the guest that is gone
        hv.actual("web", running=True)
    assert hv.actual("web", running=True).vcpupin  # looked up anew
