"""What one interval between two samples says: the one formula of a share of
it, and the rows a :class:`~virtpolicy.engine.tuners.history.History` keeps,
made straight from the counters (the sampler keeps every interval's figures,
and most intervals nobody reads the rates themselves; see
:func:`~virtpolicy.engine.tuners.monitor.rates`).
"""

from __future__ import annotations

import functools
from array import array

from virtpolicy.engine.tuners.history import Row
from virtpolicy.hypervisor.stats import MISSING, RUNNING, TAIL_AT, GuestCounters, Packed, Sample


def per_cent(now: int | None, before: int | None, elapsed_ns: float) -> float | None:
    """How much ``now`` moved since ``before`` as a share of the interval (None
    without either, when it went back, or without an interval)."""
    return share(now, before, elapsed_ns) if elapsed_ns > 0 else None


def ran_throughout(now: GuestCounters, before: GuestCounters | None) -> GuestCounters | None:
    """``before`` if the guest ran at both ends of the interval (else no share of
    it is known: it started, stopped or restarted in between)."""
    if before is None or before.state != RUNNING or now.state != RUNNING:
        return None
    return before


def vcpu_shares(
    now: GuestCounters, before: GuestCounters | None, ns: float
) -> tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]]:
    """Each vCPU's run, steal and wait time as shares of one host CPU over the
    interval, in one pass (per guest per sample, and per answer: a hot loop);
    None for each without ``before`` (the guest did not run throughout: see
    :func:`ran_throughout`) or without an interval, and for a vCPU it did not have."""
    vcpus = now.vcpus
    if not vcpus:  # not sampled (nothing reads them): nothing to make
        return _NO_SHARES
    if before is None or ns <= 0:
        nones = (None,) * len(vcpus)
        return nones, nones, nones
    old = before.vcpus
    used, steal, wait = [], [], []
    for i, (run, delay, waited) in enumerate(vcpus):
        was_run, was_delay, was_waited = old[i] if i < len(old) else (None, None, None)
        used.append(share(run, was_run, ns))
        steal.append(share(delay, was_delay, ns))
        wait.append(share(waited, was_waited, ns))
    return tuple(used), tuple(steal), tuple(wait)


_NO_SHARES: tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]] = (
    (),
    (),
    (),
)


def share(now: int | None, before: int | None, ns: float) -> float | None:
    """:func:`per_cent` for an interval known to be longer than 0."""
    return (
        (now - before) / ns * 100.0
        if now is not None and before is not None and now >= before
        else None
    )


def elapsed_ns(now: Sample, before: Sample | None) -> float:
    return (now.monotonic - before.monotonic) * 1e9 if before else 0.0


def host_busy(now: Sample, before: Sample | None) -> tuple[float | None, ...]:
    """Each host CPU's busy share over the interval."""
    host: list[float | None] = []
    for cpu, (busy, idle) in enumerate(now.host_cpus):
        if before is None or cpu >= len(before.host_cpus):
            host.append(None)
            continue
        d_busy, d_idle = busy - before.host_cpus[cpu][0], idle - before.host_cpus[cpu][1]
        total = d_busy + d_idle
        host.append(d_busy / total * 100.0 if d_busy >= 0 and d_idle >= 0 and total > 0 else None)
    return tuple(host)


@functools.cache
def _guest_metrics(vcpus: int, stall: bool, memory: bool, usable: bool) -> tuple[str, ...]:
    optional = (("memory_stall", stall), ("memory_kib", memory), ("usable_kib", usable))
    return (
        "cpu",
        "rss_kib",
        *(name for name, present in optional if present),
        *(f"vcpu.{i}" for i in range(vcpus)),
        *(f"steal.{i}" for i in range(vcpus)),
    )


@functools.cache
def _host_metrics(cpus: int) -> tuple[str, ...]:
    return tuple(f"cpu.{cpu}" for cpu in range(cpus))


def rows_of(now: Sample, before: Sample | None) -> dict[str, Row]:
    """The values one interval adds to the history, straight from the counters
    (the rates themselves are made only when read: see :attr:`Monitor.latest`):
    a row per guest and one for the "host". A guest's metrics: "cpu",
    "rss_kib"; where sampled, "memory_stall", "memory_kib" (the balloon's),
    "usable_kib"; "vcpu.N" and "steal.N" for each vCPU (the names made once per
    shape, not per sample). Each value is its :class:`GuestRates` field's.

    Per guest per sample, the hottest loop after reading the files: each row is
    one list (2-3 µs a guest; 4-7 before, joining tuples)."""
    ns = elapsed_ns(now, before)
    guests, prior = now.guests, before.guests if before else {}
    out: dict[str, Row] = {}
    if (
        isinstance(guests, Packed)
        and isinstance(prior, Packed)
        and guests.shape is prior.shape
        and ns > 0
    ):  # the same guests at the same places: straight from the numbers
        _packed_rows(out, guests, prior, ns)
        guests, prior = guests.others, prior.others
    for name, g in guests.items():
        ran = ran_throughout(g, prior.get(name)) if ns > 0 else None
        out[name] = _row(
            None if ran is None else per_cent(g.cpu_ns, ran.cpu_ns, ns),
            g.rss_kib,
            None if ran is None else per_cent(g.memory_stall_ns, ran.memory_stall_ns, ns),
            g.memory_kib,
            g.usable_kib,
            vcpu_shares(g, ran, ns),
            len(g.vcpus),
        )
    if now.host_cpus:  # only while the host CPUs are sampled
        out["host"] = (_host_metrics(len(now.host_cpus)), host_busy(now, before))
    return out


#: Where a figure rows_of reads is in a guest's counters after ``rss_kib``.
_MEMORY, _USABLE, _STALL = (TAIL_AT[n] for n in ("memory_kib", "usable_kib", "memory_stall_ns"))


def _packed_rows(out: dict[str, Row], now: Packed, before: Packed, ns: float) -> None:
    """:func:`rows_of` for the guests of two samples of one shape, from their
    arrays of numbers: the same values, with no guest's counters made."""
    shape, new, old = now.shape, now.numbers, before.numbers
    for i, name in enumerate(shape.names):
        at, vcpus, tail = shape.offsets[i], shape.vcpus[i], now.tails[i]
        rss = new[at + 1]
        running = shape.states[i] == RUNNING  # the same in both: one shape
        out[name] = _row(
            share(new[at], old[at], ns) if running else None,
            None if rss == MISSING else rss,
            share(tail[_STALL], before.tails[i][_STALL], ns) if running else None,
            tail[_MEMORY],
            tail[_USABLE],
            packed_vcpu_shares(new, old, at, vcpus, ns if running else 0.0),
            vcpus,
        )


def _row(
    cpu: float | None,
    rss: int | None,
    stall: float | None,
    memory: int | None,
    usable: int | None,
    shares: tuple[tuple[float | None, ...], ...],
    vcpus: int,
) -> Row:
    """A guest's row: CPU share and resident memory; the stall share, the
    balloon's memory and what the guest could use, where known; each vCPU's run
    share, then each one's steal share (see :func:`rows_of`)."""
    values: list[float | None] = [cpu, rss]
    for optional in (stall, memory, usable):
        if optional is not None:
            values.append(optional)
    values += shares[0]
    values += shares[1]
    metrics = _guest_metrics(vcpus, stall is not None, memory is not None, usable is not None)
    return metrics, values


def packed_vcpu_shares(
    new: array[int], old: array[int], at: int, vcpus: int, ns: float
) -> tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]]:
    """:func:`vcpu_shares` of a guest of two :class:`Packed` samples of one shape
    whose numbers begin at ``at`` (``ns`` 0: it did not run throughout). The
    kernel keeps no vCPU wait time: those shares are None."""
    if not vcpus:
        return _NO_SHARES
    nones = (None,) * vcpus
    if ns <= 0:
        return nones, nones, nones
    end = at + 2 + 2 * vcpus
    shares = tuple(
        (a - b) / ns * 100.0 if a >= b >= 0 else None
        for a, b in zip(new[at + 2 : end], old[at + 2 : end], strict=True)
    )
    return shares[0::2], shares[1::2], nones  # each vCPU's run time, then each one's delay
