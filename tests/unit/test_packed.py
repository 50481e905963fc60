"""Counters packed as one array of numbers per sample: each guest reads back as
the counters it was read as, and the history's rows made from the numbers are
the rows made from the counters. On made-up samples, and on a sampler of
made-up QEMU processes (tests/unit/test_kernel.py's)."""

from __future__ import annotations

import time
import types
from array import array
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_kernel import GROUP, qemu_process, status
from virtpolicy.engine.tuners.intervals import rows_of
from virtpolicy.engine.tuners.monitor import rates
from virtpolicy.hypervisor.kernel import NO_TAIL, files_of, read_counters, threads_from_status
from virtpolicy.hypervisor.localstats import LocalSampler
from virtpolicy.hypervisor.stats import (
    MISSING,
    GuestCounters,
    Packed,
    Sample,
    Shape,
    VcpuCounters,
)

RUNNING, PAUSED = 1, 3


def packed(guests: list[GuestCounters]) -> Packed:
    """``guests`` as a sampler of local guests packs them."""
    numbers: array[int] = array("q")
    for g in guests:
        numbers.extend(MISSING if n is None else n for n in (g.cpu_ns, g.rss_kib))
        for v in g.vcpus:
            numbers.extend(MISSING if n is None else n for n in (v.time_ns, v.delay_ns))
    shape = Shape.of([(g.name, g.state, len(g.vcpus)) for g in guests])
    return Packed(shape, numbers, tuple(tuple(g[5:]) for g in guests), {})


counter = st.integers(0, 2**50)
maybe = st.none() | counter


@st.composite
def guest_pairs(draw: st.DrawFn) -> list[tuple[GuestCounters, GuestCounters]]:
    """Guests as read at two samples: the same shape, their counters moved on
    (or back, or missing: each gives no share)."""
    pairs = []
    for i in range(draw(st.integers(0, 4))):
        state = draw(st.sampled_from([RUNNING, PAUSED]))
        vcpus = draw(st.integers(0, 3))
        tails = []
        for _ in range(2):
            tail: list[object] = [None] * len(NO_TAIL)
            for at in (0, 1, 2, 3, 4, 5, 6, 11):  # balloon, the guest's own view, the stall
                tail[at] = draw(maybe)
            tails.append(tail)
        two = []
        for tail in tails:
            vcpu = tuple(VcpuCounters(draw(maybe), draw(maybe), None) for _ in range(vcpus))
            two.append(GuestCounters(f"g{i}", state, draw(counter), vcpu, draw(maybe), *tail))
        pairs.append((two[0], two[1]))
    return pairs


@settings(max_examples=300, deadline=None)
@given(guest_pairs(), st.floats(0.5, 30))
def test_packed_guests_read_back_and_make_the_same_rows(
    pairs: list[tuple[GuestCounters, GuestCounters]], seconds: float
) -> None:
    before = [b for b, _ in pairs]
    now = [n for _, n in pairs]
    was, new = packed(before), packed(now)
    new = Packed(was.shape, new.numbers, new.tails, {})  # one shape: made once per start
    assert dict(new) == {g.name: g for g in now}
    assert list(new) == [g.name for g in now]
    assert len(new) == len(now)
    plain_now = Sample(10.0 + seconds, 0, {g.name: g for g in now}, ())
    plain_before = Sample(10.0, 0, {g.name: g for g in before}, ())
    packed_now, packed_before = Sample(10.0 + seconds, 0, new, ()), Sample(10.0, 0, was, ())
    assert rows_of(packed_now, packed_before) == rows_of(plain_now, plain_before)
    assert rates(packed_now, packed_before) == rates(plain_now, plain_before)


def _guest(proc: Path, run: Path, cgroups: Path, name: str, pid: int) -> None:
    qemu_process(proc, pid, [pid + 1, pid + 2], f"0::{GROUP}{pid}/emulator\n")
    group = cgroups / f"{GROUP}{pid}".lstrip("/")
    group.mkdir(parents=True)
    (group / "cpu.stat").write_text(f"usage_usec {pid * 1000}\n")
    (group / "memory.stat").write_text("anon 4096\nfile 8192\npgmajfault 1\n")
    (run / f"{name}.xml").write_text(status(pid, [pid + 1, pid + 2]))


def test_a_sampler_packs_every_guest_as_read_one_by_one_and_unpacks_when_one_is_gone(
    tmp_path: Path,
) -> None:
    """Guests on cgroup v2 (CPU time from the group, resident memory from
    ``statm``), read in one pass: each as reading it on its own gives. When a
    process is gone before its stop is heard, that sample is taken guest by
    guest, and the gone one is named with the reason."""
    proc, cgroups, run = tmp_path / "proc", tmp_path / "cgroup", tmp_path / "run"
    run.mkdir()
    for name, pid in (("web", 900), ("db", 910)):
        _guest(proc, run, cgroups, name, pid)
    sampler = LocalSampler(run, proc, cgroups)
    sampler.domains.watched = True
    sampler.domains.listed(
        {"web": (3, RUNNING), "db": (4, PAUSED), "off": (-1, 5)}, 0, time.monotonic()
    )
    for groups in ({"vcpu", "balloon"}, {"vcpu"}, set()):
        sample = sampler.collect(None, 1, groups, 0)  # type: ignore[arg-type]
        assert isinstance(sample.guests, Packed), groups
        assert sample.fallback == {}
        for name, number, state in (("web", 3, RUNNING), ("db", 4, PAUSED)):
            files = files_of(
                threads_from_status((run / f"{name}.xml").read_text(), proc), proc, cgroups
            )
            alone = read_counters(
                name, state, files, vcpus="vcpu" in groups, rss="balloon" in groups,
                tail=sampler._memory[(name, number)].tail if "balloon" in groups else (),
            )  # fmt: skip
            assert sample.guests[name] == alone, groups
        assert sample.guests["off"].cpu_ns is None
        assert list(sample.guests) == ["web", "db", "off"]
    assert sample.guests["web"].cpu_ns == 900_000_000
    assert sample.guests["web"].vcpus == ()  # not asked for: not read
    (proc / "910" / "stat").write_text("")  # db's process is gone: its stop not yet heard
    (cgroups / f"{GROUP}910".lstrip("/") / "cpu.stat").write_text("")
    conn = types.SimpleNamespace(lookupByName=lambda _: object(), domainListGetStats=lambda *_: [])
    sample = sampler.collect(conn, 1, {"vcpu"}, 0)  # type: ignore[arg-type]
    assert not isinstance(sample.guests, Packed)
    assert set(sample.guests) == {"web", "off"}  # libvirt has no record of db either
    assert sample.fallback == {"db": "process 910 is gone"}
    sampler.domains.listed({"web": (3, RUNNING), "off": (-1, 5)}, 0, time.monotonic())
    assert isinstance(sampler.collect(conn, 1, {"vcpu"}, 0).guests, Packed)  # type: ignore[arg-type]
