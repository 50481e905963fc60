"""The graph's layout (columns are start waves, few crossings) and the chains
that say why a guest cannot start."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from virtpolicy.policy.graph import start_waves
from virtpolicy.policy.layout import blocking_chain, layered


def test_columns_are_waves_and_rows_follow_the_links() -> None:
    # Two chains a1 <- a2 and b1 <- b2, given so that names alone would cross them.
    edges = {"a2": [("b1", "requires")], "b2": [("a1", "requires")]}
    waves = start_waves(edges)
    at = layered(edges, waves)
    assert {g: c for g, (c, _r) in at.items()} == {"a1": 0, "b1": 0, "a2": 1, "b2": 1}
    # Each dependent sits in the row of what it depends on: no crossing.
    assert at["a2"][1] == at["b1"][1]
    assert at["b2"][1] == at["a1"][1]


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("abcdefgh"),
        st.lists(st.sampled_from("abcdefgh"), max_size=3, unique=True),
        max_size=8,
    )
)
def test_every_guest_has_one_place_right_of_what_it_depends_on(deps: dict[str, list[str]]) -> None:
    # Only edges to earlier letters: acyclic by construction.
    edges = {g: [(d, "requires") for d in ds if d < g] for g, ds in deps.items()}
    waves = start_waves(edges)
    at = layered(edges, waves)
    assert sorted(at) == sorted(g for wave in waves for g in wave)
    assert len(set(at.values())) == len(at)
    for guest, links in edges.items():
        for dep, _kind in links:
            assert at[dep][0] < at[guest][0]
    assert layered(edges, waves) == at  # deterministic


def test_the_chain_goes_down_to_the_first_guest_not_running() -> None:
    edges = {
        "web": [("api", "requires"), ("cache", "wants")],
        "api": [("db", "requires")],
    }
    states = {"web": "shut off", "api": "shut off", "db": "shut off", "cache": "shut off"}
    hosts = {"db": "host-a"}
    chain = blocking_chain("web", edges, states.get, hosts.get)
    assert chain == "web ← api ← db: db is shut off on host-a"
    states["db"] = "running"
    assert blocking_chain("web", edges, states.get, hosts.get) == (
        "web ← api: api is shut off"  # a wanted cache does not hold it back
    )
    states["api"] = "running"
    assert blocking_chain("web", edges, states.get, hosts.get) is None
    assert blocking_chain("api", {"api": [("ghost", "requires")]}, states.get, hosts.get) == (
        "api ← ghost: ghost is not defined on any host"
    )


def test_independent_groups_are_laid_out_apart_largest_first() -> None:
    """Two groups that share no dependency: the larger in the top rows, the other
    below it, an empty row between; no row holds guests of both."""
    edges = {
        "web": [("api", "requires")],
        "api": [("db", "requires")],
        "cache": [("db", "wants")],
        "batch": [("queue", "requires")],
    }
    waves = start_waves(edges)
    at = layered(edges, waves)
    big = {"web", "api", "db", "cache"}
    rows_big = {at[g][1] for g in big}
    rows_small = {at[g][1] for g in ("batch", "queue")}
    assert max(rows_big) + 2 == min(rows_small)  # one empty row between
    assert at["queue"][0] < at["batch"][0]  # still in start order
