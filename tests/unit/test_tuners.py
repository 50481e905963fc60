"""Tuners on the simulated host: placement, moves, hysteresis, caps."""

from __future__ import annotations

import pytest

from virtpolicy.engine.tuners import available, load
from virtpolicy.engine.tuners.balance import Balance
from virtpolicy.engine.tuners.contention import Contention
from virtpolicy.engine.tuners.run import Decision, Tuners
from virtpolicy.errors import ConfigError
from virtpolicy.policy.model import GuestPolicy, parse_policy
from virtpolicy.policy.topology import Topology
from virtpolicy.testing.simulate import SimulatedHypervisor, clock_of, generate, play


def auto(*guests: str, **cpu: object) -> dict[str, GuestPolicy]:
    return {g: parse_policy({"guest": g, "cpu": {"vcpus": "auto", **cpu}}) for g in guests}


def engine(host: SimulatedHypervisor, *tuners: object, **kw: object) -> Tuners:
    return Tuners(list(tuners), clock=clock_of(host), **kw)  # type: ignore[arg-type]


def test_builtins_are_found_through_entry_points() -> None:
    """Builtins are found through entry points."""
    assert {"static", "balance", "contention"} <= set(available())
    assert [p.name for p in load(["balance", "static"])] == ["balance", "static"]
    with pytest.raises(ConfigError, match=r'tuner: "nosuch" is not an installed tuner'):
        load(["nosuch"])


def test_balance_places_then_moves_a_busy_vcpu_off_a_crowded_cpu() -> None:
    """Balance places then moves a busy vCPU off a crowded CPU."""
    steps = 40
    traces = {("a", 0): [80.0] * steps, ("a", 1): [80.0] * steps, ("b", 0): [60.0] * steps}
    host = SimulatedHypervisor(cpus=4, traces=traces)
    e = engine(host, Balance())
    decisions = play(host, e, auto("a", "b"), steps=2)
    # Unplaced vCPUs go to one CPU each at once (no confirmation needed), apart.
    assert {host.pins["a", 0], host.pins["a", 1], host.pins["b", 0]} == {
        frozenset({0}),
        frozenset({1}),
        frozenset({2}),
    }
    assert all(d.applied for d in decisions if d.outcome != "no change: already so")
    # Crowd them onto CPU 0 by hand: balance spreads them again.
    for key in traces:
        host.pins[key] = frozenset({0})
    decisions = play(host, e, auto("a", "b"), steps=20)
    assert len(set(host.pins.values())) == 3
    assert max(host.cpu_demand()) == pytest.approx(80.0)
    moved = [d for d in decisions if d.applied]
    assert len(moved) == 2  # two had to leave CPU 0, and only two moved
    assert "lowers the peak" in moved[0].reason
    # The target is a set of host CPUs; only the API's dict shows it as a cpuset.
    assert isinstance(moved[0].value, frozenset)
    assert len(moved[0].value) == 1
    assert moved[0].to_dict()["value"] == str(next(iter(moved[0].value)))


def test_balance_does_not_flap_on_load_oscillating_around_the_threshold() -> None:
    """x and y swap between 50 % and 10 % every sample; z stays at 30 %. The
    engine's window, confirmation and dwell keep placement still; without them
    it moves on and on."""
    steps = 200
    traces = {
        ("x", 0): [50.0 if t % 2 else 10.0 for t in range(steps)],
        ("y", 0): [10.0 if t % 2 else 50.0 for t in range(steps)],
        ("z", 0): [30.0] * steps,
    }
    policies = auto("x", "y", "z")

    def moves(**kw: object) -> int:
        host = SimulatedHypervisor(cpus=2, traces=traces)
        host.pins.update({("x", 0): frozenset({0}), ("y", 0): frozenset({1})})
        host.pins[("z", 0)] = frozenset({0})
        play(host, engine(host, Balance(), **kw), policies, steps)
        return host.moves

    assert moves() <= 1
    assert moves(window=5, confirm=1, dwell=0, settings={"threshold": 5}) >= 20


def test_dry_run_decides_and_logs_but_changes_nothing() -> None:
    """Dry run decides and logs but changes nothing."""
    traces = {("a", 0): [90.0] * 10, ("a", 1): [90.0] * 10}
    host = SimulatedHypervisor(cpus=2, traces=traces)
    host.pins.update({("a", 0): frozenset({0}), ("a", 1): frozenset({0})})
    e = engine(host, Balance(), dry_run=True)
    play(host, e, auto("a"), steps=5)
    assert host.moves == 0
    logged = e.decisions("a")
    assert logged
    assert {d.outcome for d in logged} <= {"dry run", "waiting: proposed 1 of 2 times in a row"}
    assert any(d.outcome == "dry run" for d in logged)


def test_contention_caps_above_fair_share_and_lifts_when_calm() -> None:
    """Contention caps above fair share and lifts when calm."""
    busy, calm = 60, 60
    hog = [100.0] * busy + [10.0] * calm
    traces = {
        ("hog", 0): hog,
        ("hog", 1): hog,
        ("small", 0): [100.0] * busy + [10.0] * calm,
    }
    policies = {
        "hog": parse_policy({"guest": "hog"}),
        "small": parse_policy({"guest": "small", "cpu": {"weight": 100}}),
    }
    host = SimulatedHypervisor(cpus=2, traces=traces)
    e = engine(host, Contention(), dwell=30)
    play(host, e, policies, steps=busy)
    assert host.caps["hog"] == 100  # two equal weights on two CPUs: 100 % each
    assert "small" not in host.caps or host.caps["small"] is None
    play(host, e, policies, steps=calm)
    assert host.caps["hog"] is None
    capped = [d for d in e.decisions("hog") if d.applied]
    assert [d.value for d in reversed(capped)] == [100, None]


def test_contention_does_not_flap_between_its_thresholds() -> None:
    """Host load wandering between 75 % and 85 %: under high (90), over low (70)."""
    steps = 120
    wander = [75.0 if t % 7 < 3 else 85.0 for t in range(steps)]
    host = SimulatedHypervisor(cpus=2, traces={("g", 0): wander, ("g", 1): wander})
    e = engine(host, Contention(), window=5)  # each sample alone: no smoothing helps
    play(host, e, {"g": parse_policy({"guest": "g"})}, steps=steps)
    assert e.decisions() == []


def test_balance_quality_on_a_generated_trace() -> None:
    """A small version of the benchmark: the peak ends near the lower bound."""
    traces = generate(guests=40, vcpus=4, steps=30, seed=3)
    host = SimulatedHypervisor(cpus=16, traces=traces)
    play(host, engine(host, Balance()), auto(*{g for g, _ in traces}), steps=30)
    assert max(host.cpu_demand()) <= 1.25 * host.lower_bound()


def test_a_failing_policy_is_skipped_and_the_others_run() -> None:
    """A failing policy is skipped and the others run."""

    class Broken:
        name = "broken"
        description = "raises"

        def decide(self, context: object) -> list[object]:
            raise RuntimeError("bug")

    traces = {("a", 0): [90.0] * 4, ("a", 1): [90.0] * 4}
    host = SimulatedHypervisor(cpus=2, traces=traces)
    e = engine(host, Broken(), Balance())
    play(host, e, auto("a"), steps=2)
    assert host.pins["a", 0] != host.pins["a", 1]  # balance still placed them


# Two nodes of 4 cores x 2 threads, numbered as Linux does: core k has threads k
# and k+8; node 0 holds CPUs 0-3 and 8-11, node 1 CPUs 4-7 and 12-15.
LAYOUT = Topology.regular(2, 1, 4, 2)


def crowded(noise: dict[int, float]) -> SimulatedHypervisor:
    """a's two busy vCPUs crowded onto CPU 0; a guest without a policy puts
    ``noise`` (CPU -> %) elsewhere."""
    traces = {("a", 0): [80.0] * 20, ("a", 1): [80.0] * 20}
    traces |= {(f"n{cpu}", 0): [pct] * 20 for cpu, pct in noise.items()}
    host = SimulatedHypervisor(cpus=16, traces=traces)
    host.pins |= {("a", 0): frozenset({0}), ("a", 1): frozenset({0})}
    host.pins |= {(f"n{cpu}", 0): frozenset({cpu}) for cpu in noise}
    return host


def moves_of(decisions: list[Decision]) -> list[frozenset[int]]:
    return [d.value for d in decisions if d.applied]  # type: ignore[misc]


def test_balance_prefers_an_idle_core_to_a_busy_cores_idle_sibling() -> None:
    """CPU 1 is idle but its sibling 9 is busy; core 2 (CPUs 2 and 10) is idle
    whole: the vCPU that leaves CPU 0 goes to 2 (without the layout, to 1)."""
    host = crowded({9: 90.0})
    moved = moves_of(play(host, engine(host, Balance()), auto("a"), steps=2, layout=LAYOUT))
    assert moved == [frozenset({2})]
    blind = crowded({9: 90.0})
    assert moves_of(play(blind, engine(blind, Balance()), auto("a"), steps=2)) == [frozenset({1})]


def test_balance_moves_within_the_nodes_and_the_pool() -> None:
    """Node 0 is half busy everywhere, node 1 idle: the vCPU stays in node 0 (its
    memory's). With a shared pool of CPUs 0, 3 and 11, it goes to 3 or 11 only."""
    busy = dict.fromkeys((1, 2, 3, 8, 9, 10, 11), 50.0)
    host = crowded(busy)
    moved = moves_of(play(host, engine(host, Balance()), auto("a"), steps=2, layout=LAYOUT))
    assert len(moved) == 1
    assert moved[0] <= LAYOUT.node_cpus(0)
    blind = crowded(busy)  # without the layout: the idlest CPU, in node 1
    assert moves_of(play(blind, engine(blind, Balance()), auto("a"), steps=2)) == [frozenset({4})]
    pooled = crowded({})
    pools = {"a": frozenset({0, 3, 11})}
    moved = moves_of(
        play(pooled, engine(pooled, Balance()), auto("a"), steps=2, layout=LAYOUT, pools=pools)
    )
    assert moved == [frozenset({3})]
