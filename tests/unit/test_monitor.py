"""Rates from counters, history windows, and the Prometheus text, on made-up samples."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from virtpolicy.api import metrics
from virtpolicy.engine.tuners.intervals import rows_of
from virtpolicy.engine.tuners.monitor import History, Monitor, rates
from virtpolicy.engine.tuning.reconcile import GuestStatus
from virtpolicy.hypervisor.native import Field, Tuning
from virtpolicy.hypervisor.stats import (
    GuestCounters,
    HostMemory,
    Sample,
    VcpuCounters,
    parse_domain_stats,
)
from virtpolicy.policy.model import parse_policy

RUNNING, SHUTOFF = 1, 5
S = 1_000_000_000  # ns


def guest(name: str, cpu: int | None, vcpus: list[int], state: int = RUNNING) -> GuestCounters:
    return GuestCounters(
        name,
        state,
        cpu,
        tuple(VcpuCounters(t, t // 10, None) for t in vcpus),
        40000,
        65536,
        65536,
    )


def sample(t: float, *guests: GuestCounters, host: tuple[tuple[int, int], ...] = ()) -> Sample:
    return Sample(t, 1_700_000_000 + t, {g.name: g for g in guests}, host)


def test_rates_are_per_cent_of_one_host_cpu() -> None:
    """Rates are per cent of one host CPU."""
    before = sample(0, guest("busy", 0, [0, 0]), host=((0, 0), (0, 0)))
    now = sample(5, guest("busy", 7 * S, [5 * S, 2 * S]), host=((4 * S, 1 * S), (1 * S, 4 * S)))
    r = rates(now, before)
    busy = r.guests["busy"]
    assert busy.cpu_percent == 140.0  # 7 s of CPU in 5 s: 1.4 host CPUs
    assert [v.percent for v in busy.vcpus] == [100.0, 40.0]
    assert [v.steal_percent for v in busy.vcpus] == [10.0, 4.0]
    assert [v.wait_percent for v in busy.vcpus] == [None, None]  # not reported: no value
    assert r.host_busy_percent == (80.0, 20.0)
    assert r.interval == 5


def test_restart_and_missing_fields_give_no_rate_not_a_spike() -> None:
    """Restart and missing fields give no rate not a spike."""
    first = sample(0, guest("g", 50 * S, [50 * S]))
    restarted = sample(5, guest("g", 1 * S, [1 * S]))  # counters went back to zero
    assert rates(restarted, first).guests["g"].cpu_percent is None
    after = sample(10, guest("g", 2 * S, [2 * S]))
    assert rates(after, restarted).guests["g"].cpu_percent == 20.0
    stopped = sample(15, guest("g", None, [], state=SHUTOFF))
    assert rates(stopped, after).guests["g"].cpu_percent is None
    again = sample(20, guest("g", 1 * S, [1 * S]))
    # Stopped, then started between two samples: no rate across the restart.
    assert rates(again, stopped).guests["g"].cpu_percent is None
    # The test driver reports the state only.
    bare = parse_domain_stats("t", {"state.state": 1, "state.reason": 0})
    assert (bare.cpu_ns, bare.vcpus, bare.rss_kib) == (None, (), None)
    assert rates(sample(5, bare), sample(0, bare)).guests["t"].cpu_percent is None


def test_history_window_steps_and_wraps() -> None:
    """History window steps and wraps."""
    h = History(capacity=4)
    for i in range(6):  # wraps: only the last four are kept
        h.add(100.0 + i, {"g": (("cpu", "rss_kib"), (float(i), None))})
    points = h.window("g", ["cpu", "rss_kib"], since=0, step=0)
    assert [p["time"] for p in points] == [102.0, 103.0, 104.0, 105.0]
    assert [p["cpu"] for p in points] == [2.0, 3.0, 4.0, 5.0]
    assert {p["rss_kib"] for p in points} == {None}
    assert [p["cpu"] for p in h.window("g", ["cpu"], since=103.0, step=0)] == [4.0, 5.0]
    assert [p["cpu"] for p in h.window("g", ["cpu"], since=0, step=2)] == [2.5, 4.5]
    assert h.bytes_for(2) == 2 * 4 * 4


def test_history_forgets_a_guest_gone_for_a_whole_window() -> None:
    """History forgets a guest gone for a whole window."""
    h = History(capacity=3)
    h.add(1.0, {"old": (("cpu",), (1.0,)), "new": (("cpu",), (1.0,))})
    h.add(2.0, {"new": (("cpu",), (1.0,))})
    h.add(3.0, {"new": (("cpu",), (1.0,))})
    assert h.owners() == {"old", "new"}  # its 1.0 is still in the window
    assert [p["cpu"] for p in h.window("old", ["cpu"], since=0, step=0)] == [1.0, None, None]
    for t in range(4, 6):
        h.add(float(t), {"new": (("cpu",), (1.0,))})
    assert h.owners() == {"new"}
    assert h.metrics("old") == ()
    assert h.series() == 1


def test_history_keeps_a_readers_columns_after_it_has_gone() -> None:
    """A guest's vCPU figures (sampled while a reader wants them) stay in the
    window after they are no longer sampled, as gaps from then on; a new
    metric widens the guest's row without losing what it had."""
    h = History(capacity=4)
    h.add(1.0, {"g": (("cpu", "rss_kib"), (10.0, 100))})
    h.add(2.0, {"g": (("cpu", "rss_kib", "vcpu.0", "steal.0"), (20.0, 100, 15.0, 1.5))})
    h.add(3.0, {"g": (("cpu", "rss_kib"), (30.0, None))})
    assert h.metrics("g") == ("cpu", "rss_kib", "vcpu.0", "steal.0")
    points = h.window("g", ["cpu", "rss_kib", "vcpu.0", "steal.0", "nothing"], since=0, step=0)
    assert [p["cpu"] for p in points] == [10.0, 20.0, 30.0]
    assert [p["rss_kib"] for p in points] == [100.0, 100.0, None]
    assert [p["vcpu.0"] for p in points] == [None, 15.0, None]
    assert [p["steal.0"] for p in points] == [None, 1.5, None]
    assert {p["nothing"] for p in points} == {None}
    assert h.window("nobody", ["cpu"], since=0, step=0) == [
        {"time": t, "cpu": None} for t in (1.0, 2.0, 3.0)
    ]
    assert h.series() == 4


def test_a_samples_rows_name_each_value_by_its_metric() -> None:
    """rows_of gives one row per guest, its values under the names the history
    and the guest's page read; a "host" row only while host CPUs are sampled."""
    before = sample(0, guest("g", 0, [0, 0]))
    after = sample(5, guest("g", S, [S, 2 * S]))
    metrics, values = rows_of(after, before)["g"]
    assert dict(zip(metrics, values, strict=True)) == {
        "cpu": 20.0,
        "rss_kib": 40000,
        "memory_kib": 65536,
        "vcpu.0": 20.0,
        "vcpu.1": 40.0,
        "steal.0": 2.0,
        "steal.1": 4.0,
    }
    assert "host" not in rows_of(after, before)
    host = rows_of(sample(5, host=((50, 50),)), sample(0, host=((0, 0),)))["host"]
    assert host == (("cpu.0",), (50.0,))


_counter = st.none() | st.integers(0, 10**15)
_counters = st.builds(
    lambda state, cpu, vcpus, rss, memory, usable, stall: GuestCounters(
        "g", state, cpu, tuple(VcpuCounters(*v) for v in vcpus), rss, memory, None
    )._replace(usable_kib=usable, memory_stall_ns=stall),
    st.sampled_from([RUNNING, SHUTOFF, 3]),
    _counter,
    st.lists(st.tuples(_counter, _counter, _counter), max_size=4),
    _counter,
    _counter,
    _counter,
    _counter,
)


@settings(max_examples=300, deadline=None)
@given(now=_counters, before=st.none() | _counters, seconds=st.floats(0, 100))
def test_each_history_value_is_the_rates_own(
    now: GuestCounters, before: GuestCounters | None, seconds: float
) -> None:
    """The history's rows are made straight from the counters, the rates only
    when read: whatever the counters (a guest stopped, restarted, with vCPUs
    added, fields missing), each value in the row is its rate's, None as None."""
    first = sample(0, *([before] if before else []), host=((0, 0),))
    second = sample(seconds, now, host=((5 * S, 5 * S),))
    r, rows = rates(second, first), rows_of(second, first)
    g = r.guests["g"]
    metrics, values = rows["g"]
    expected = {
        "cpu": g.cpu_percent,
        "rss_kib": g.rss_kib,
        "memory_stall": g.memory_stall_percent,
        "memory_kib": g.memory_kib,
        "usable_kib": g.usable_kib,
        **{f"vcpu.{i}": v for i, v in enumerate(g.vcpu_percent)},
        **{f"steal.{i}": v for i, v in enumerate(g.vcpu_steal_percent)},
    }
    # A metric left out of the row is one with no value.
    assert dict(zip(metrics, values, strict=True)) == {
        m: v for m, v in expected.items() if v is not None or not m.startswith(("memory", "usable"))
    }
    assert rows["host"] == (("cpu.0",), r.host_busy_percent)


def test_rates_are_made_when_read_and_kept_only_for_a_tuner() -> None:
    """A monitor keeps the newest rates for its tuners only when it has some
    (``keep``); its latest rates are made when read, once per sample."""
    monitor, kept = Monitor(interval=5, keep=0.0), Monitor(interval=5)
    for t in range(3):
        for m in (monitor, kept):
            m.ingest(sample(5 * t, guest("g", t * S, [t * S])), 0.001)
    assert len(monitor.recent) == 0
    assert [r.wall for r in kept.recent] == [1_700_000_005, 1_700_000_010]
    latest = monitor.latest
    assert latest is not None
    assert latest.guests["g"].cpu_percent == 20.0
    assert monitor.latest is latest  # made once for this sample
    monitor.ingest(sample(15, guest("g", 4 * S, [3 * S])), 0.001)
    assert monitor.latest is not latest
    newer = monitor.latest
    assert newer is not None
    assert newer.guests["g"].cpu_percent == 40.0


def test_prometheus_text_parses_with_the_right_labels() -> None:
    """Prometheus text parses with the right labels."""
    monitor = Monitor(interval=5)
    monitor.ingest(sample(0, guest("web", 0, [0, 0]), host=((0, 0),)), 0.001)
    monitor.ingest(sample(5, guest("web", 3 * S, [2 * S, 1 * S]), host=((1 * S, 4 * S),)), 0.002)
    actual = Tuning(vcpupin={0: frozenset({0, 1}), 1: frozenset({2})}, sched={"cpu_shares": 2048})
    status = GuestStatus("web", 1, "running", actual=actual)
    status.drift = {Field("sched", name="cpu_shares"): (1024, 2048)}
    policies = {"web": parse_policy({"guest": "web", "requires": [{"guest": 'd"b'}]})}
    text = metrics.render(monitor, [status], policies, {'d"b': "running"})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    cpu = families["virtpolicy_guest_cpu_seconds"]  # the parser drops _total
    assert cpu.type == "counter"
    assert [(s.labels, s.value) for s in cpu.samples] == [({"guest": "web"}, 3.0)]
    vcpu = families["virtpolicy_guest_vcpu_seconds"].samples
    assert [(s.labels, s.value) for s in vcpu] == [
        ({"guest": "web", "vcpu": "0"}, 2.0),
        ({"guest": "web", "vcpu": "1"}, 1.0),
    ]
    affinity = families["virtpolicy_guest_vcpu_affinity_cpus"].samples
    assert [(s.labels["vcpu"], s.value) for s in affinity] == [("0", 2.0), ("1", 1.0)]
    dep = families["virtpolicy_guest_dependency_up"].samples
    assert [(s.labels, s.value) for s in dep] == [
        ({"guest": "web", "dependency": 'd"b', "kind": "requires"}, 1.0)
    ]
    assert families["virtpolicy_guest_policy_drift_fields"].samples[0].value == 1
    assert families["virtpolicy_host_cpu_busy_ratio"].samples[0].value == 0.2
    assert families["virtpolicy_sampler_samples"].samples[0].value == 2
    sched = families["virtpolicy_guest_scheduler_parameter"].samples
    assert [(s.labels["name"], s.value) for s in sched] == [("cpu_shares", 2048.0)]


def test_prometheus_memory_series_keep_the_last_host_memory() -> None:
    """The guest's own view of its memory and the host's memory are series of
    /metrics; a sample without the host's memory keeps the last one shown."""
    monitor = Monitor(interval=5)
    seen = guest("web", 0, [0])._replace(
        usable_kib=2048, guest_swap_in_kib=16, guest_major_faults=7
    )
    host = HostMemory(total_kib=8 * 1024, available_kib=2 * 1024, stall=12.5)
    monitor.ingest(dataclasses.replace(sample(0, seen), host_memory=host), 0.001)
    monitor.ingest(sample(5, guest("web", S, [S])), 0.001)  # no view, no host memory
    families = {
        f.name: f for f in text_string_to_metric_families(metrics.render(monitor, [], {}, {}))
    }
    assert families["virtpolicy_host_memory_bytes"].samples[0].labels == {"kind": "total"}
    assert [s.value for s in families["virtpolicy_host_memory_bytes"].samples] == [
        8 * 1024 * 1024,
        2 * 1024 * 1024,
    ]
    assert families["virtpolicy_host_memory_stall_ratio"].samples[0].value == 0.125
    assert families["virtpolicy_guest_usable_memory_bytes"].samples == []  # no view now

    monitor.ingest(sample(10, seen), 0.001)
    families = {
        f.name: f for f in text_string_to_metric_families(metrics.render(monitor, [], {}, {}))
    }
    usable = families["virtpolicy_guest_usable_memory_bytes"].samples
    assert [(s.labels, s.value) for s in usable] == [({"guest": "web"}, 2048 * 1024)]
    assert families["virtpolicy_guest_internal_swap_in_bytes"].samples[0].value == 16 * 1024
    assert families["virtpolicy_guest_internal_major_faults"].samples[0].value == 7
