"""``GET /metrics``: Prometheus text exposition (format 0.0.4).

Counters are libvirt's own (CPU seconds of a guest and of each vCPU, and
the vCPU's run-queue delay, its steal time), so Prometheus' ``rate()``
works across scrapes and sample intervals; gauges are the current tuning,
policy drift, dependency state and the sampler's health.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.engine.tuning.reconcile import GuestStatus
from virtpolicy.policy.model import GuestPolicy

if TYPE_CHECKING:
    from virtpolicy.hypervisor.stats import GuestCounters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Row = tuple[Mapping[str, str | int], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str, rows: Iterable[Row]) -> None:
        self.lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for labels, value in rows:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"
            )


def _vcpu_seconds(guests: Sequence[GuestCounters], counter: str) -> Iterator[Row]:
    """One row per vCPU that has ``counter`` (nanoseconds), in seconds."""
    for g in guests:
        for i, v in enumerate(g.vcpus):
            ns = getattr(v, counter)
            if ns is not None:
                yield {"guest": g.name, "vcpu": i}, ns / 1e9


def render(
    monitor: Monitor,
    statuses: Sequence[GuestStatus],
    policies: Mapping[str, GuestPolicy],
    states: Mapping[str, str],
) -> str:
    out = _Text()
    sample = monitor.last
    guests = sorted(sample.guests.values(), key=lambda g: g.name) if sample else []
    out.family(
        "virtpolicy_guest_cpu_seconds_total",
        "counter",
        "CPU time used by the guest (every thread of it), as libvirt counts it.",
        (({"guest": g.name}, g.cpu_ns / 1e9) for g in guests if g.cpu_ns is not None),
    )
    out.family(
        "virtpolicy_guest_vcpu_seconds_total",
        "counter",
        "CPU time used by each vCPU.",
        _vcpu_seconds(guests, "time_ns"),
    )
    out.family(
        "virtpolicy_guest_vcpu_delay_seconds_total",
        "counter",
        "Time each vCPU was runnable but waited for a host CPU (the guest's steal time).",
        _vcpu_seconds(guests, "delay_ns"),
    )
    out.family(
        "virtpolicy_guest_memory_bytes",
        "gauge",
        "Memory the guest has now (balloon current).",
        (({"guest": g.name}, g.memory_kib * 1024) for g in guests if g.memory_kib is not None),
    )
    out.family(
        "virtpolicy_guest_resident_memory_bytes",
        "gauge",
        "Resident memory of the guest's process on the host.",
        (({"guest": g.name}, g.rss_kib * 1024) for g in guests if g.rss_kib is not None),
    )
    out.family(
        "virtpolicy_guest_cgroup_memory_bytes",
        "gauge",
        "The guest's memory cgroup: anonymous, page cache (file) and swap.",
        (
            ({"guest": g.name, "kind": kind}, value * 1024)
            for g in guests
            for kind, value in (("anon", g.anon_kib), ("file", g.file_kib), ("swap", g.swap_kib))
            if value is not None
        ),
    )
    out.family(
        "virtpolicy_guest_major_faults_total",
        "counter",
        "Major page faults in the guest's memory cgroup.",
        (({"guest": g.name}, g.major_faults) for g in guests if g.major_faults is not None),
    )
    out.family(
        "virtpolicy_guest_memory_stall_seconds_total",
        "counter",
        "Time the guest's tasks stalled waiting for memory (PSI some; cgroup v2).",
        (
            ({"guest": g.name}, g.memory_stall_ns / 1e9)
            for g in guests
            if g.memory_stall_ns is not None
        ),
    )
    out.family(
        "virtpolicy_guest_usable_memory_bytes",
        "gauge",
        "Memory the guest could use without swapping, as its balloon driver says.",
        (({"guest": g.name}, g.usable_kib * 1024) for g in guests if g.usable_kib is not None),
    )
    out.family(
        "virtpolicy_guest_internal_swap_in_bytes_total",
        "counter",
        "Memory the guest swapped in since its boot, as its balloon driver says.",
        (
            ({"guest": g.name}, g.guest_swap_in_kib * 1024)
            for g in guests
            if g.guest_swap_in_kib is not None
        ),
    )
    out.family(
        "virtpolicy_guest_internal_major_faults_total",
        "counter",
        "Major page faults inside the guest since its boot, as its balloon driver says.",
        (
            ({"guest": g.name}, g.guest_major_faults)
            for g in guests
            if g.guest_major_faults is not None
        ),
    )
    host = monitor.host_memory
    out.family(
        "virtpolicy_host_memory_bytes",
        "gauge",
        "The host's memory: total, and available (its MemAvailable).",
        (
            ({"kind": kind}, kib * 1024)
            for kind, kib in (
                (("total", host.total_kib), ("available", host.available_kib)) if host else ()
            )
        ),
    )
    out.family(
        "virtpolicy_host_memory_stall_ratio",
        "gauge",
        "Share of the last ten seconds the host's tasks stalled for memory (PSI some avg10).",
        [({}, host.stall / 100.0)] if host and host.stall is not None else [],
    )
    out.family(
        "virtpolicy_guest_running",
        "gauge",
        "1 if the guest runs, as the last sample saw it.",
        (({"guest": g.name}, float(g.running)) for g in guests),
    )
    out.family(
        "virtpolicy_guest_vcpu_affinity_cpus",
        "gauge",
        "Host CPUs each vCPU may run on now (its pinning).",
        (
            ({"guest": s.guest, "vcpu": str(vcpu)}, len(cpus))
            for s in statuses
            for vcpu, cpus in sorted(s.actual.vcpupin.items())
        ),
    )
    out.family(
        "virtpolicy_guest_scheduler_parameter",
        "gauge",
        "Current scheduler parameters (cpu_shares, global_quota, ...).",
        (
            ({"guest": s.guest, "name": key}, float(value))
            for s in statuses
            for key, value in sorted(s.actual.sched.items())
        ),
    )
    out.family(
        "virtpolicy_guest_policy_drift_fields",
        "gauge",
        "Fields where the guest differs from its policy, as of the last pass.",
        (({"guest": s.guest}, len(s.drift)) for s in statuses),
    )
    out.family(
        "virtpolicy_guest_dependency_up",
        "gauge",
        "1 if a dependency of the guest runs (as libvirt's events say), else 0.",
        (
            (
                {"guest": name, "dependency": dep, "kind": kind},
                float(states.get(dep) == "running"),
            )
            for name, policy in sorted(policies.items())
            for dep, kind in policy.dependencies()
        ),
    )
    busy = monitor.latest.host_busy_percent if monitor.latest else ()
    out.family(
        "virtpolicy_host_cpu_busy_ratio",
        "gauge",
        "Share of the last sample interval each host CPU was busy (0 to 1).",
        (({"cpu": cpu}, b / 100.0) for cpu, b in enumerate(busy) if b is not None),
    )
    out.family(
        "virtpolicy_sampler_samples_total",
        "counter",
        "Samples taken.",
        [({}, monitor.samples)],
    )
    out.family(
        "virtpolicy_sampler_errors_total",
        "counter",
        "Samples that failed.",
        [({}, monitor.errors)],
    )
    out.family(
        "virtpolicy_sampler_cpu_seconds",
        "gauge",
        "CPU time the last sample took in the daemon.",
        [({}, monitor.last_duration)],
    )
    out.family(
        "virtpolicy_sampler_interval_seconds",
        "gauge",
        "Seconds between samples.",
        [({}, monitor.interval)],
    )
    return "\n".join(out.lines) + "\n"
