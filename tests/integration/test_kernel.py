"""The kernel's counters of real QEMU guests against libvirt's bulk call: the
threads libvirt's status names are the guest's, and over the same interval
the time counters agree within 1 %."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BUSY, eventually, virsh
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.hypervisor.kernel import read_counters, status_of, threads_from_status
from virtpolicy.hypervisor.stats import RUNNING, GuestCounters

pytestmark = pytest.mark.integration


@pytest.fixture
def hv(qemu_uri: str) -> Iterator[LibvirtConnection]:
    h = LibvirtConnection(qemu_uri)
    h.open()
    yield h
    h.close()


def test_kernel_and_libvirt_agree_on_a_busy_guest(
    hv: LibvirtConnection, make_guest: Callable[..., str]
) -> None:
    guest = make_guest("kernel", vcpus=2, boot=BUSY)  # vCPU 0 spins, vCPU 1 idles
    virsh("start", guest)
    threads = threads_from_status(status_of(guest))
    assert len(threads.vcpus) == 2

    def both() -> tuple[GuestCounters, GuestCounters]:
        ours = read_counters(guest, RUNNING, threads)
        theirs = hv.sample({"vcpu", "balloon"}).guests[guest]
        return ours, theirs

    # Spinning: vCPU 0 has run for a while (TCG starts slowly).
    eventually(lambda: (both()[0].vcpus[0].time_ns or 0) > 500_000_000, 30)
    ours0, theirs0 = both()
    time.sleep(3)  # the interval both are measured over
    ours1, theirs1 = both()

    def delta(a: int | None, b: int | None) -> int:
        assert a is not None
        assert b is not None
        return b - a

    # vCPU 0's run time (schedstat against libvirt's vcpu.0.time, which counts in
    # the kernel's ticks): within 1 % of what it ran.
    ran = delta(ours0.vcpus[0].time_ns, ours1.vcpus[0].time_ns)
    said = delta(theirs0.vcpus[0].time_ns, theirs1.vcpus[0].time_ns)
    assert ran > 2_000_000_000  # it spun for most of the 3 s
    assert abs(ran - said) <= 0.01 * ran, (ran, said)
    # Its wait in the run queue: the same file libvirt reads, so exactly alike
    # up to the moments of reading.
    waited = delta(ours0.vcpus[0].delay_ns, ours1.vcpus[0].delay_ns)
    told = delta(theirs0.vcpus[0].delay_ns, theirs1.vcpus[0].delay_ns)
    assert abs(waited - told) <= max(0.01 * ran, 0.01 * waited), (waited, told)
    # The whole guest's CPU time.
    total = delta(ours0.cpu_ns, ours1.cpu_ns)
    libvirt_total = delta(theirs0.cpu_ns, theirs1.cpu_ns)
    assert abs(total - libvirt_total) <= 0.01 * libvirt_total, (total, libvirt_total)
    # Resident memory: the same figure, within a page or two of growth.
    assert ours1.rss_kib is not None
    assert theirs1.rss_kib is not None
    assert abs(ours1.rss_kib - theirs1.rss_kib) <= 0.01 * theirs1.rss_kib
