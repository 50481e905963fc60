"""Translating policies into native tuning values per driver and host."""

import pytest

from virtpolicy.engine.jobs import admission
from virtpolicy.engine.tuners import balance
from virtpolicy.errors import PolicyError
from virtpolicy.hypervisor import native
from virtpolicy.hypervisor.native import (
    Field,
    NodeInfo,
    Scheduler,
    Tuning,
    cap_of,
    cap_params,
    desired_tuning,
    drift,
    guest_shape,
    shown,
    weight_params,
)
from virtpolicy.policy import cpuset
from virtpolicy.policy.cpuset import CpuSet
from virtpolicy.policy.model import parse_policy
from virtpolicy.policy.placement import Placed
from virtpolicy.policy.topology import Topology

HOST = NodeInfo(cpus=8, scheduler="cgroup1", driver="qemu")


@pytest.mark.parametrize(
    ("weight", "scheduler", "params"),
    [
        (100, "cgroup1", {"cpu_shares": 1024}),
        (200, "cgroup1", {"cpu_shares": 2048}),
        (1, "cgroup1", {"cpu_shares": 10}),
        (10000, "cgroup1", {"cpu_shares": 102400}),
        (250, "cgroup2", {"cpu_shares": 250}),
        (100, "xen", {"weight": 256}),
        (10000, "xen", {"weight": 25600}),
        (100, "none", {}),
    ],
)
def test_weight(weight: int, scheduler: Scheduler, params: dict[str, int]) -> None:
    """Weight maps to cpu_shares (v1: x10.24, v2: as is) or Xen weight (x2.56)."""
    assert weight_params(weight, scheduler) == params


@pytest.mark.parametrize(
    ("cap", "scheduler", "params"),
    [
        (50, "cgroup1", {"global_period": 100000, "global_quota": 50000}),
        (150, "cgroup2", {"global_period": 100000, "global_quota": 150000}),
        (None, "cgroup1", {"global_period": 100000, "global_quota": -1}),
        (200, "xen", {"cap": 200}),
        (None, "xen", {"cap": 0}),
    ],
)
def test_cap(cap: int | None, scheduler: Scheduler, params: dict[str, int]) -> None:
    """Cap maps to global_quota over a 100 ms period, or to Xen's cap."""
    assert cap_params(cap, scheduler) == params


def test_pins_per_vcpu_and_default() -> None:
    """vcpupin entries win over vcpus; vcpus covers every other vCPU."""
    policy = parse_policy(
        {
            "guest": "g",
            "cpu": {"vcpupin": {0: "1"}, "vcpus": "4-5", "emulatorpin": "0", "weight": 200},
        }
    )
    desired = desired_tuning(policy, HOST, vcpus=3)
    assert desired.tuning == Tuning(
        vcpupin={0: frozenset({1}), 1: frozenset({4, 5}), 2: frozenset({4, 5})},
        emulatorpin=frozenset({0}),
        sched={"cpu_shares": 2048},
    )
    assert desired.problems == ()


def test_cpusets_are_parsed_once_when_the_policy_is_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass reads a policy's cpusets as they were parsed on validation: with the
    parser gone, the tuning is still worked out (every pass re-parsed them)."""
    policy = parse_policy(
        {"guest": "g", "cpu": {"vcpupin": {0: "1"}, "vcpus": "4-5", "emulatorpin": "0-1,^1"}}
    )
    assert isinstance(policy.cpu.vcpus, CpuSet)
    assert (policy.cpu.emulatorpin, policy.cpu.vcpupin[0].cpus) == ("0", frozenset({1}))

    def refused(text: str) -> frozenset[int]:
        raise AssertionError(f"{text!r} parsed again")

    monkeypatch.setattr(cpuset, "parse_cpuset", refused)
    for module in (native, admission, balance):
        if hasattr(module, "parse_cpuset"):
            monkeypatch.setattr(module, "parse_cpuset", refused)
    desired = desired_tuning(policy, HOST, vcpus=2)
    assert desired.tuning.vcpupin == {0: frozenset({1}), 1: frozenset({4, 5})}
    assert desired.tuning.emulatorpin == frozenset({0})
    assert admission.migration_refusals("g", policy, 4) == [
        "g: cpu.vcpus = 4-5 names host CPUs this host lacks (it has 4: 0-3); pin it for this"
        " host, or use cpu.vcpus: auto"
    ]


def test_unset_fields_are_not_managed() -> None:
    """A policy without CPU fields asks for no tuning at all."""
    assert desired_tuning(parse_policy({"guest": "g"}), HOST, vcpus=2).tuning == Tuning()


def test_removed_fields_go_back_to_defaults() -> None:
    """Fields an earlier policy set and this one drops are reset, not left behind."""
    before = parse_policy(
        {"guest": "g", "cpu": {"vcpus": "1", "emulatorpin": "0", "weight": 300, "cap": 50}}
    )
    desired = desired_tuning(parse_policy({"guest": "g"}), HOST, vcpus=2, previous=before)
    every = frozenset(range(8))
    assert desired.tuning == Tuning(
        vcpupin={0: every, 1: every},
        emulatorpin=every,
        sched={"cpu_shares": 1024, "global_period": 100000, "global_quota": -1},
    )


def test_impossible_pins_are_problems() -> None:
    """Pins to CPUs the host lacks, or vCPUs the guest lacks, are named, not applied."""
    policy = parse_policy({"guest": "g", "cpu": {"vcpupin": {0: "2", 3: "1"}, "vcpus": "6-9"}})
    desired = desired_tuning(policy, HOST, vcpus=2)
    assert desired.tuning.vcpupin == {0: frozenset({2})}
    assert desired.problems == (
        "cpu.vcpupin[3]: the guest has 2 vCPUs (0-1)",
        "cpu.vcpus: CPU 8-9 does not exist: the host has 8 CPUs (0-7)",
    )


def test_unsupported_scheduler_is_a_problem() -> None:
    """On a driver without scheduler parameters, weight and cap are reported."""
    host = NodeInfo(cpus=4, scheduler="none", driver="test")
    policy = parse_policy({"guest": "g", "cpu": {"weight": 5, "cap": 50}})
    desired = desired_tuning(policy, host, vcpus=1)
    assert desired.tuning == Tuning()
    assert desired.problems == (
        "cpu.weight: not supported by the test driver",
        "cpu.cap: not supported by the test driver",
    )


def test_drift_lists_managed_fields_only() -> None:
    """Drift compares only what the policy manages, as (actual, desired)."""
    desired = Tuning(vcpupin={0: frozenset({1})}, sched={"cpu_shares": 2048})
    actual = Tuning(
        vcpupin={0: frozenset({0, 1}), 1: frozenset({0})},
        emulatorpin=frozenset({3}),
        sched={"cpu_shares": 1024, "global_quota": -1},
    )
    assert shown(drift(desired, actual)) == {"vcpupin.0": ("0-1", "1"), "cpu_shares": (1024, 2048)}
    assert drift(desired, desired) == {}


def test_auto_keeps_a_placement_within_allowed_and_puts_back_one_outside() -> None:
    """vcpus: auto leaves placement to the tuner, inside cpu.allowed."""
    policy = parse_policy({"guest": "g", "cpu": {"vcpus": "auto", "allowed": "1-2"}})
    placed = Tuning(vcpupin={0: frozenset({2}), 1: frozenset({0, 1})})
    desired = desired_tuning(policy, HOST, vcpus=2, actual=placed)
    assert desired.tuning.vcpupin == {0: frozenset({2}), 1: frozenset({1, 2})}
    fresh = desired_tuning(policy, HOST, vcpus=2)
    assert fresh.tuning.vcpupin == {0: frozenset({1, 2}), 1: frozenset({1, 2})}


def test_auto_is_refused_with_vcpupin_and_allowed_needs_auto() -> None:
    """Auto is refused with vCPUpin and allowed needs auto."""
    with pytest.raises(PolicyError, match=r"cpu.vcpupin: not with cpu.vcpus: auto"):
        parse_policy({"guest": "g", "cpu": {"vcpus": "auto", "vcpupin": {0: "1"}}})
    with pytest.raises(PolicyError, match=r"cpu.allowed: only with cpu.vcpus: auto"):
        parse_policy({"guest": "g", "cpu": {"vcpus": "1", "allowed": "1"}})
    with pytest.raises(PolicyError, match=r"cpu.vcpus"):
        parse_policy({"guest": "g", "cpu": {"vcpus": "automatic"}})


def test_cap_of_reads_back_what_cap_params_writes() -> None:
    """Cap of reads back what cap params writes."""
    for scheduler in ("cgroup1", "cgroup2", "xen"):
        for cap in (None, 30, 150):
            assert cap_of(cap_params(cap, scheduler), scheduler) == cap  # type: ignore[arg-type]
    assert cap_of({"global_period": 100000, "global_quota": 17592186044415}, "cgroup1") is None


def test_a_dedicated_guest_not_placed_yet_says_so() -> None:
    """Until the placer has placed it, a dedicated guest gets no pins, and says so."""
    policy = parse_policy({"guest": "web", "cpu": {"placement": "dedicated", "weight": 200}})
    desired = desired_tuning(policy, HOST, 2)
    assert desired.problems == (
        "cpu.placement: dedicated: not placed yet; nothing is pinned for it",
    )
    assert desired.tuning.vcpupin == {}
    assert desired.tuning.sched  # the rest of the policy still holds
    assert desired_tuning(parse_policy({"guest": "web"}), HOST, 2).problems == ()


def test_a_refused_placement_is_the_guests_problem() -> None:
    policy = parse_policy({"guest": "web", "cpu": {"placement": "dedicated"}})
    reason = "web: needs 2 dedicated host CPUs; node 0 has 1 free"
    desired = desired_tuning(policy, HOST, 2, placed=reason)
    assert f"placement refused: {reason}" in desired.problems
    assert desired.tuning.vcpupin == {}


def test_a_placed_dedicated_guest_gets_its_cpus_and_numatune() -> None:
    policy = parse_policy({"guest": "web", "cpu": {"placement": "dedicated"}, "numa": {"nodes": 1}})
    placed = Placed((frozenset({4}), frozenset({5})), frozenset({0, 1}), (1,), frozenset({4, 5}))
    desired = desired_tuning(policy, HOST, 2, placed=placed)
    assert desired.problems == ()
    assert desired.tuning.vcpupin == {0: frozenset({4}), 1: frozenset({5})}
    assert desired.tuning.emulatorpin == frozenset({0, 1})
    assert desired.tuning.numatune == ("strict", frozenset({1}))
    assert Field("numatune").shown(desired.tuning.numatune) == "strict 1"
    interleaved = parse_policy(
        {
            "guest": "web",
            "cpu": {"placement": "dedicated"},
            "numa": {"nodes": 1, "memory": "interleave"},
        }
    )
    assert desired_tuning(interleaved, HOST, 2, placed=placed).tuning.numatune == (
        "interleave",
        frozenset({1}),
    )


def test_a_shared_guest_floats_over_the_pool_save_its_fixed_pins() -> None:
    pool = frozenset({0, 1, 2, 3})
    placed = Placed((pool, pool), pool, (0,))
    floating = desired_tuning(parse_policy({"guest": "web"}), HOST, 2, placed=placed)
    assert floating.tuning.vcpupin == {0: pool, 1: pool}
    assert floating.tuning.emulatorpin == pool
    assert floating.tuning.numatune is None  # no numa.nodes: memory is not bound
    fixed = parse_policy({"guest": "web", "cpu": {"vcpupin": {1: "6"}, "emulatorpin": "7"}})
    pinned = desired_tuning(fixed, HOST, 2, placed=placed)
    assert pinned.tuning.vcpupin == {0: pool, 1: frozenset({6})}
    assert pinned.tuning.emulatorpin == frozenset({7})
    auto = parse_policy({"guest": "web", "cpu": {"vcpus": "auto"}})
    actual = Tuning(vcpupin={0: frozenset({2}), 1: frozenset({6})})
    tuned = desired_tuning(auto, HOST, 2, actual=actual, placed=placed)
    assert tuned.tuning.vcpupin == {0: frozenset({2}), 1: pool}  # 6 left the pool


def test_cpu_topology_match_follows_the_placement() -> None:
    """The guest sees its vCPUs as they sit: sibling pairs as threads, a socket
    per host node; where they sit unevenly, one socket, one thread per core."""
    layout = Topology.regular(2, 1, 4, 2)  # core k: CPUs k and k+8; node 0: cores 0-3
    policy = parse_policy({"guest": "web", "cpu": {"placement": "dedicated", "topology": "match"}})
    host = NodeInfo(16, "cgroup2", "qemu", layout=layout)

    def shape(*cpus: int) -> tuple[int, int, int] | None:
        placed = Placed(tuple(frozenset({c}) for c in cpus), frozenset({7}), (0,), frozenset(cpus))
        return desired_tuning(policy, host, len(cpus), placed=placed).tuning.topology

    assert shape(0, 8, 1, 9) == (1, 2, 2)  # two cores, both threads each
    assert shape(0, 1, 2, 3) == (1, 4, 1)  # isolate: a core each
    assert shape(0, 8, 4, 12) == (2, 1, 2)  # a core in each node
    assert shape(0, 8, 1) == (1, 3, 1)  # uneven: 2 on one core, 1 on another
    assert guest_shape(layout, Placed((frozenset({0}),), frozenset(), (0,))) == (1, 1, 1)
    desired = desired_tuning(
        policy,
        host,
        2,
        placed=Placed((frozenset({0}), frozenset({8})), frozenset({7}), (0,), frozenset({0, 8})),
    )
    assert Field("topology").shown(desired.tuning.topology) == "1 sockets, 1 cores, 2 threads"
    assert desired.problems == ()


def test_the_soft_limit_and_free_page_reporting_are_managed_as_the_policy_says() -> None:
    """memory.soft_limit is libvirt's soft_limit in KiB, lifted (unlimited) when
    the policy drops it; free page reporting is managed only where the policy
    says on or off."""
    policy = parse_policy(
        {"guest": "g", "memory": {"soft_limit": "1536M", "free_page_reporting": True}}
    )
    desired = desired_tuning(policy, HOST, vcpus=2).tuning
    assert desired == Tuning(memtune={"soft_limit": 1536 * 1024}, free_page_reporting=True)
    lifted = desired_tuning(parse_policy({"guest": "g"}), HOST, vcpus=2, previous=policy).tuning
    assert lifted == Tuning(memtune={"soft_limit": native.UNLIMITED_KIB})
    found = drift(lifted, Tuning(memtune={"soft_limit": 1536 * 1024}, free_page_reporting=True))
    assert shown(found) == {"soft_limit": (1572864, "unlimited")}
    off = Tuning(free_page_reporting=False)
    assert shown(drift(desired.only([Field("memballoon")]), off)) == {
        "free_page_reporting": ("off", "on")
    }
