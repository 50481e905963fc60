"""Memory policy enforced on a real libvirtd with QEMU guests: the soft limit
(live and defined) and free page reporting (defined), read back with virsh."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import virsh
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


def memtune(guest: str, *flags: str) -> dict[str, str]:
    """`virsh memtune GUEST` as {parameter: value}."""
    pairs = (
        line.split(":", 1) for line in virsh("memtune", guest, *flags).splitlines() if ":" in line
    )
    return {k.strip(): v.strip() for k, v in pairs}


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
