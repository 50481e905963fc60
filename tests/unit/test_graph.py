"""The dependency graph: cycles, start and stop waves."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.errors import CycleError
from virtpolicy.policy.graph import (
    Edges,
    check_acyclic,
    critical_path,
    dependents,
    find_cycle,
    start_waves,
    stop_waves,
)

DIAMOND: Edges = {
    "web": [("api", "requires"), ("cache", "wants")],
    "api": [("db", "requires")],
    "cache": [("db", "requires")],
    "db": [],
    "batch": [],
}


def test_start_waves_of_everything() -> None:
    """Every guest starts after what it depends on; independent guests share a wave."""
    assert start_waves(DIAMOND) == [["batch", "db"], ["api", "cache"], ["web"]]


def test_start_waves_of_one_guest_include_its_dependencies() -> None:
    """Starting api starts db first, and nothing else."""
    assert start_waves(DIAMOND, ["api"]) == [["db"], ["api"]]


def test_dependency_without_policy_is_a_leaf() -> None:
    """A guest only named as a dependency is planned like any other."""
    assert start_waves({"web": [("db", "requires")]}) == [["db"], ["web"]]


def test_stop_waves_stop_dependents_first() -> None:
    """Stopping db stops web, then api and cache, then db."""
    assert stop_waves(DIAMOND, ["db"]) == [["web"], ["api", "cache"], ["db"]]


def test_stop_does_not_stop_guests_that_only_want_it() -> None:
    """web only wants cache: stopping cache leaves web running."""
    assert stop_waves(DIAMOND, ["cache"]) == [["cache"]]


def test_dependents_follow_requires_only_by_default() -> None:
    """Dependents of cache by requires are none; by wants, web."""
    assert dependents(DIAMOND, ["cache"]) == {"cache"}
    assert dependents(DIAMOND, ["cache"], kinds=("requires", "wants")) == {"cache", "web"}


@pytest.mark.parametrize(
    ("edges", "first", "cycle"),
    [
        (
            {"web": [("api", "requires")], "api": [("web", "requires")]},
            ["web"],
            ["web", "api", "web"],
        ),
        ({"web": [("api", "requires")], "api": [("web", "wants")]}, ["api"], ["api", "web", "api"]),
        (
            {"a": [("b", "requires")], "b": [("c", "wants")], "c": [("a", "requires")], "d": []},
            [],
            ["a", "b", "c", "a"],
        ),
    ],
)
def test_cycles_are_named(edges: Edges, first: list[str], cycle: list[str]) -> None:
    """A cycle is reported as a closed path starting where the search began."""
    assert find_cycle(edges, first) == cycle
    with pytest.raises(CycleError, match=" -> ".join(cycle)):
        check_acyclic(edges, first)


def test_plans_refuse_a_cyclic_graph() -> None:
    """A cycle that slipped into a store is refused at plan time, named."""
    edges = {"web": [("api", "requires")], "api": [("web", "requires")]}
    with pytest.raises(
        CycleError, match=r"^dependency cycle: (web -> api -> web|api -> web -> api)$"
    ):
        start_waves(edges)
    with pytest.raises(CycleError):
        stop_waves(edges)


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[tuple[str, str]]]:
    n = draw(st.integers(min_value=1, max_value=25))
    names = [f"g{i}" for i in range(n)]
    edges: dict[str, list[tuple[str, str]]] = {}
    for i, name in enumerate(names):
        targets = (
            draw(st.sets(st.integers(min_value=0, max_value=max(i - 1, 0)), max_size=3))
            if i
            else set()
        )
        kind = draw(st.sampled_from(["requires", "wants"]))
        edges[name] = [(names[t], kind) for t in sorted(targets)]
    return edges


@given(dags())
def test_start_waves_respect_every_edge(edges: dict[str, list[tuple[str, str]]]) -> None:
    """In any DAG, each guest's wave comes after all its dependencies' waves."""
    waves = start_waves(edges)
    wave_of = {g: i for i, wave in enumerate(waves) for g in wave}
    assert set(wave_of) == set(edges)
    for guest, deps in edges.items():
        for dep, _ in deps:
            assert wave_of[dep] < wave_of[guest]
    # As parallel as the graph allows: every guest past wave 0 waits for someone
    # in the wave just before it.
    for guest, i in wave_of.items():
        if i:
            assert any(wave_of[d] == i - 1 for d, _ in edges[guest])


@given(dags())
def test_stop_waves_reverse_every_edge(edges: dict[str, list[tuple[str, str]]]) -> None:
    """In any DAG, each guest stops before everything it depends on."""
    wave_of = {g: i for i, wave in enumerate(stop_waves(edges)) for g in wave}
    for guest, deps in edges.items():
        for dep, _ in deps:
            assert wave_of[guest] < wave_of[dep]


@given(dags(), st.data())
def test_adding_a_back_edge_is_a_cycle(
    edges: dict[str, list[tuple[str, str]]], data: st.DataObject
) -> None:
    """An edge from a guest to one of its dependents always closes a named cycle."""
    guest = data.draw(st.sampled_from(sorted(edges)))
    below = dependents(edges, [guest], kinds=("requires", "wants")) - {guest}
    if not below:
        assert find_cycle(edges) is None
        return
    target = sorted(below)[0]
    cyclic = {**edges, guest: [*edges[guest], (target, "requires")]}
    cycle = find_cycle(cyclic, [guest])
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert b in {d for d, _ in cyclic[a]}


def test_critical_path_is_the_longest_chain() -> None:
    """The critical path runs from a root to the deepest guest, one step per wave."""
    waves = start_waves(DIAMOND)
    assert critical_path(DIAMOND, waves) == ["db", "cache", "web"]
    assert critical_path(DIAMOND, start_waves(DIAMOND, ["api"])) == ["db", "api"]
    assert critical_path({}, []) == []
