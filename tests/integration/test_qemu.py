"""Enforcement on a real libvirtd with QEMU guests (CPU and memory tuning); values
read back with virsh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import vcpu_affinity, virsh
from virtpolicy.engine import changes
from virtpolicy.engine.tuning.reconcile import Reconciler
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.hypervisor.native import shown
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration


@pytest.fixture
def hv(qemu_uri: str) -> Iterator[LibvirtConnection]:
    h = LibvirtConnection(qemu_uri)
    h.open()
    yield h
    h.close()


def vcpupin(guest: str, *flags: str) -> dict[int, str]:
    """`virsh vcpupin GUEST` as {vcpu: cpuset}."""
    return {int(v): cpus for v, cpus in vcpu_affinity(virsh("vcpupin", guest, *flags)).items()}


def parameters(command: str, guest: str, *flags: str) -> dict[str, str]:
    """`virsh COMMAND GUEST` (schedinfo, memtune) as {parameter: value}."""
    pairs = (
        line.split(":", 1) for line in virsh(command, guest, *flags).splitlines() if ":" in line
    )
    return {k.strip(): v.strip() for k, v in pairs}


def schedinfo(guest: str, *flags: str) -> dict[str, str]:
    return parameters("schedinfo", guest, *flags)


def memtune(guest: str, *flags: str) -> dict[str, str]:
    return parameters("memtune", guest, *flags)


def test_the_real_hosts_topology_comes_from_its_capabilities(hv: LibvirtConnection) -> None:
    """libvirtd's capabilities give each host CPU's node and core."""
    layout = hv.node().layout
    assert layout is not None
    assert layout.source == "capabilities"
    assert len(layout.cpus) == hv.node().cpus
    assert set(layout.nodes) >= {0}


def test_policy_set_before_start_is_in_effect_at_start(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """Pinning, weight and cap written to the definition hold from the first instant."""
    guest = make_guest("before")
    changes.set_policy(
        store,
        guest,
        {"cpu": {"vcpus": "1", "emulatorpin": "0", "weight": 200, "cap": 150}},
        actor="t",
    )
    [status] = Reconciler(store, hv).reconcile()
    assert (status.state, status.error, status.problems) == ("shut off", None, [])
    virsh("start", guest)
    # No pass ran since the start: what is live came from the definition.
    assert vcpupin(guest, "--live") == {0: "1", 1: "1"}
    assert virsh("emulatorpin", guest, "--live").split()[-1] == "0"
    info = schedinfo(guest, "--live")
    expected_shares = "2048" if hv.node().scheduler == "cgroup1" else "200"
    assert info["cpu_shares"] == expected_shares
    assert (info["global_period"], info["global_quota"]) == ("100000", "150000")


def test_policy_changed_while_running_takes_effect_live(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """A change to a running guest's policy is applied live and to the definition."""
    guest = make_guest("live")
    virsh("start", guest)
    changes.set_policy(store, guest, {"cpu": {"vcpupin": {"1": "0"}, "cap": 50}}, actor="t")
    reconciler = Reconciler(store, hv)
    reconciler.reconcile()
    assert vcpupin(guest, "--live")[1] == "0"
    assert vcpupin(guest, "--config")[1] == "0"
    assert schedinfo(guest, "--live")["global_quota"] == "50000"
    changes.set_policy(store, guest, {"cpu": {"cap": None, "weight": 300}}, actor="t")
    reconciler.reconcile()
    info = schedinfo(guest, "--live")
    assert info["global_quota"] in ("-1", "17592186044415")  # uncapped again
    assert info["cpu_shares"] == ("3072" if hv.node().scheduler == "cgroup1" else "300")


def test_hand_made_drift_is_put_back_in_enforce_mode(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """`virsh vcpupin` by hand is undone by the next pass."""
    guest = make_guest("drift")
    virsh("start", guest)
    changes.set_policy(store, guest, {"cpu": {"vcpus": "1"}}, actor="t")
    reconciler = Reconciler(store, hv)
    reconciler.reconcile()
    virsh("vcpupin", guest, "0", "0-1", "--live")
    assert vcpupin(guest, "--live")[0] == "0-1"
    [status] = reconciler.reconcile()
    assert shown(status.applied) == {"vcpupin.0": ("0-1", "1")}
    assert vcpupin(guest, "--live") == {0: "1", 1: "1"}


def test_hand_made_drift_is_only_reported_in_report_mode(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """In report mode the drift shows on the status and stays on the guest."""
    guest = make_guest("report")
    virsh("start", guest)
    changes.set_policy(store, guest, {"cpu": {"vcpus": "1", "weight": 500}}, actor="t")
    Reconciler(store, hv).reconcile()
    virsh("vcpupin", guest, "0", "0", "--live")
    virsh("schedinfo", guest, "--live", "--set", "cpu_shares=1000")
    [status] = Reconciler(store, hv, mode="report").reconcile()
    shares = "5120" if hv.node().scheduler == "cgroup1" else "500"
    assert shown(status.drift) == {"vcpupin.0": ("0", "1"), "cpu_shares": (1000, int(shares))}
    assert vcpupin(guest, "--live")[0] == "0"
    assert schedinfo(guest, "--live")["cpu_shares"] == "1000"


def test_pin_to_missing_cpu_names_the_host_size(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """A pin to a CPU the host lacks is refused on the status, the rest applied."""
    guest = make_guest("missing")
    changes.set_policy(
        store, guest, {"cpu": {"vcpupin": {"0": "63"}, "emulatorpin": "0"}}, actor="t"
    )
    [status] = Reconciler(store, hv).reconcile()
    n = hv.node().cpus
    assert status.problems == [
        f"cpu.vcpupin[0]: CPU 63 does not exist: the host has {n} CPUs (0-{n - 1})"
    ]
    assert virsh("emulatorpin", guest, "--config").split()[-1] == "0"


def test_transient_guest_is_enforced_live_with_its_mirror(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str], tmp_path: Path
) -> None:
    """A guest made by `virsh create` has no definition to write: its pinning,
    weight and mirror go to the live guest only, with no error or problem, and a
    second pass finds nothing to do (the mirror reads back from the live state)."""
    guest = make_guest("transient")
    xml = tmp_path / "guest.xml"
    xml.write_text(virsh("dumpxml", guest))
    virsh("undefine", guest)
    virsh("create", str(xml))
    assert virsh("dominfo", guest).split("Persistent:")[1].split()[0] == "no"
    changes.set_policy(store, guest, {"cpu": {"vcpus": "1", "weight": 300}}, actor="t")
    reconciler = Reconciler(store, hv)
    [status] = reconciler.reconcile()
    assert (status.state, status.error, status.problems, status.drift) == ("running", None, [], {})
    assert vcpupin(guest, "--live") == {0: "1", 1: "1"}
    assert schedinfo(guest, "--live")["cpu_shares"] == (
        "3072" if hv.node().scheduler == "cgroup1" else "300"
    )
    assert hv.read_mirror(guest, persistent=False) is not None
    [again] = Reconciler(store, hv).reconcile()  # a fresh reconciler reads the mirror
    assert (again.error, again.applied) == (None, {})


def test_a_guest_gone_between_the_listing_and_its_info_is_left_out(
    hv: LibvirtConnection, make_guest: Callable[[str], str], tmp_path: Path
) -> None:
    """A transient guest that stops (and so is gone) after libvirt listed it and
    before its info is read is left out of the listing; the pass goes on with
    the rest (it failed whole, "no such guest", for every guest of the host)."""
    stays, goes = make_guest("stays"), make_guest("goes")
    xml = tmp_path / "goes.xml"
    xml.write_text(virsh("dumpxml", goes))
    virsh("undefine", goes)
    virsh("create", str(xml))  # transient: destroyed, it is gone
    real = hv.conn

    class Racing:
        """The connection, with ``goes`` destroyed right after the listing."""

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def listAllDomains(self, flags: int = 0) -> list[object]:
            found = real.listAllDomains(flags)
            if flags == 0:
                virsh("destroy", goes)
            return found

    hv._conn = Racing()
    try:
        names = [g.name for g in hv.guests()]
    finally:
        hv._conn = real
    assert stays in names
    assert goes not in names


def test_the_soft_limit_and_free_page_reporting_are_enforced_and_put_back(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[[str], str]
) -> None:
    """memory.soft_limit is set live and in the definition, put back after a
    change by hand, and lifted when the policy drops it; free page reporting is
    written to the definition's balloon (QEMU takes it at the next start)."""
    guest = make_guest("memtune")
    virsh("start", guest)
    changes.set_policy(
        store, guest, {"memory": {"soft_limit": "48M", "free_page_reporting": True}}, actor="t"
    )
    reconciler = Reconciler(store, hv)
    [status] = reconciler.reconcile()
    assert shown(status.applied) == {
        "soft_limit": ("unlimited", 49152),
        "free_page_reporting": ("off", "on"),
    }
    assert status.drift == {}
    assert memtune(guest, "--live")["soft_limit"] == "49152"
    assert memtune(guest, "--config")["soft_limit"] == "49152"
    assert "freePageReporting='on'" in virsh("dumpxml", guest, "--inactive")

    virsh("memtune", guest, "--soft-limit", "65536", "--live")
    [status] = reconciler.reconcile()
    assert shown(status.applied) == {"soft_limit": (65536, 49152)}
    assert memtune(guest, "--live")["soft_limit"] == "49152"

    changes.set_policy(store, guest, {"memory": {"soft_limit": None}}, actor="t")
    [status] = reconciler.reconcile()
    assert shown(status.applied) == {"soft_limit": (49152, "unlimited")}
    assert memtune(guest, "--live")["soft_limit"] == "unlimited"


def test_free_page_reporting_for_a_guest_without_a_balloon_is_a_problem(
    store: SqlStore, hv: LibvirtConnection, make_guest: Callable[..., str]
) -> None:
    """A guest defined with <memballoon model='none'> cannot report free pages:
    the status says so; its definition is left as it was."""
    guest = make_guest("noballoon", balloon=False)
    changes.set_policy(store, guest, {"memory": {"free_page_reporting": True}}, actor="t")
    [status] = Reconciler(store, hv).reconcile()
    assert status.problems == [
        "memory.free_page_reporting: the guest has no balloon device (<memballoon>)"
    ]
    defined = virsh("dumpxml", guest, "--inactive")
    assert "<memballoon model='none'/>" in defined
    assert "freePageReporting" not in defined
