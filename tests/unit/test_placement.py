"""The placer on several host topologies: examples, refusals that explain
themselves, and the invariants under arbitrary sets of guests (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtpolicy.policy.placement import Placement, Request, place, placed_from_pins
from virtpolicy.policy.topology import HostCpu, Topology


def sub_numa() -> Topology:
    """2 sockets x 2 nodes each x 8 cores x SMT 2 (64 host CPUs)."""
    cpus = [
        HostCpu(t * 32 + node * 8 + core, node, node // 2, (node % 2) * 8 + core, llc=node)
        for t in range(2)
        for node in range(4)
        for core in range(8)
    ]
    return Topology(cpus)


def asymmetric() -> Topology:
    """Node 0: 4 cores x SMT 2; node 1: 2 cores, no SMT; node 2: memory only."""
    cpus = [HostCpu(c + 4 * t, 0, 0, c, llc=0) for t in range(2) for c in range(4)]
    cpus += [HostCpu(8 + c, 1, 1, c, llc=1) for c in range(2)]
    return Topology(cpus, memory={0: 1 << 20, 1: 1 << 20, 2: 1 << 20})


TOPOLOGIES = {
    "one node, no SMT": Topology.regular(1, 1, 8, 1),
    "2 sockets x 2 nodes x 8 cores x SMT 2": sub_numa(),
    "8 nodes x 32 CPUs": Topology.regular(8, 1, 16, 2),
    "asymmetric, a node without CPUs": asymmetric(),
}


def test_regular_topology_numbers_threads_like_linux() -> None:
    t = Topology.regular(2, 1, 4, 2)
    assert (t.nodes, t.smt, len(t.cpus)) == ((0, 1), 2, 16)
    assert t.siblings(1) == (1, 9)
    assert t.cpus_of([1]) == frozenset({4, 5, 6, 7, 12, 13, 14, 15})
    assert asymmetric().nodes == (0, 1, 2)


def test_dedicated_threads_policies_on_an_smt_host() -> None:
    """prefer fills a core's siblings; isolate takes whole cores and keeps the
    siblings idle; require puts vCPU pairs on sibling pairs; each in one node."""
    t = Topology.regular(2, 1, 4, 2)
    got = place(
        t,
        frozenset(),
        [
            Request("packed", 4, "dedicated", "prefer"),
            Request("alone", 2, "dedicated", "isolate"),
            Request("pairs", 2, "dedicated", "require", "isolate"),
        ],
    )
    assert got.refused == {}
    packed, alone, pairs = (got.guests[g] for g in ("packed", "alone", "pairs"))
    assert [set(p) for p in packed.vcpupin] == [{0}, {8}, {1}, {9}]
    assert alone.dedicated == {2, 10, 3, 11}  # two whole cores, siblings idle
    assert [set(p) for p in alone.vcpupin] == [{2}, {3}]
    assert [set(p) for p in pairs.vcpupin] == [{4}, {12}]  # one core's two threads
    assert len(pairs.emulatorpin) == 1
    assert pairs.emulatorpin <= pairs.dedicated
    assert {packed.nodes, alone.nodes, pairs.nodes} == {(0,), (1,)}


def test_a_refusal_says_what_is_needed_and_what_each_node_has() -> None:
    t = Topology.regular(2, 1, 4, 2)
    got = place(
        t,
        frozenset({0, 8}),
        [
            Request("batch", 4, "dedicated", "isolate"),
            Request("web", 4, "dedicated", "isolate", nodes=1),
        ],
    )
    assert got.refused == {
        "web": "web: needs 4 dedicated cores with isolated siblings in 1 NUMA node; "
        "node 0 has 3 free, node 1 has 0 free (batch holds 8 of its CPUs)"
    }
    assert "web" not in got.guests
    no_smt = place(
        Topology.regular(1, 1, 4, 1), frozenset(), [Request("x", 2, "dedicated", "require")]
    )
    assert no_smt.refused["x"].startswith("x: cpu.threads require needs SMT")


def test_shared_guests_float_over_what_is_not_dedicated_or_reserved() -> None:
    t = Topology.regular(1, 1, 8, 1)
    got = place(
        t,
        frozenset({0}),
        [Request("web", 2), Request("db", 3, "dedicated", "prefer")],
    )
    assert got.guests["db"].dedicated == {1, 2, 3}
    assert got.guests["web"].vcpupin == (frozenset({4, 5, 6, 7}),) * 2
    assert got.guests["db"].emulatorpin == {4, 5, 6, 7}  # its emulator shares the pool
    # A new dedicated guest leaves the shared guests a CPU to run on ...
    both = [Request("all", 8, "dedicated"), Request("web", 1)]
    everything = place(t, frozenset(), both)
    assert everything.refused == {
        "all": "all: needs 8 dedicated host CPUs of the 8 free, which would leave none"
        " shared (for emulators and shared guests)"
    }
    assert everything.guests["web"].vcpupin == (frozenset(range(8)),)
    # ... but one that holds them all already keeps them (a new guest moves no one).
    pins = {v: frozenset({v}) for v in range(8)}
    alone = placed_from_pins(t, both[0], pins, frozenset(range(8)))  # from before
    assert alone is not None
    held = place(t, frozenset(), both, current={"all": alone})
    assert held.refused["web"].startswith("web: no shared host CPU is left")


# -- invariants ------------------------------------------------------------------------

requests = st.lists(
    st.builds(
        Request,
        guest=st.just(""),
        vcpus=st.integers(1, 8),
        placement=st.sampled_from(["shared", "dedicated"]),
        threads=st.sampled_from(["prefer", "isolate", "require"]),
        emulator=st.sampled_from(["share", "isolate"]),
        nodes=st.sampled_from([None, None, 1, 2]),
    ),
    max_size=12,
).map(
    lambda rs: [
        Request(f"g{i}", r.vcpus, r.placement, r.threads, r.emulator, r.nodes)
        for i, r in enumerate(rs)
    ]
)


def check(t: Topology, reserved: frozenset[int], rs: list[Request], got: Placement) -> None:
    assert set(got.guests) | set(got.refused) == {r.guest for r in rs}
    assert not set(got.guests) & set(got.refused)
    held: dict[int, str] = {}
    for r in rs:
        p = got.guests.get(r.guest)
        if p is None:
            continue
        assert len(p.vcpupin) == r.vcpus
        if r.placement == "dedicated":
            for c in p.dedicated:  # no host CPU in two guests' dedicated sets
                assert c not in held, (c, held[c], r.guest)
                held[c] = r.guest
            assert not p.dedicated & reserved
            assert all(len(v) == 1 and v <= p.dedicated for v in p.vcpupin)
            if r.threads == "isolate":  # never two vCPUs on one core
                cores = [t.cpu(next(iter(v))).core_key for v in p.vcpupin]
                assert len(set(cores)) == len(cores)
        if r.nodes == 1:  # never spans nodes
            assert len({t.cpu(c).node for v in p.vcpupin for c in v}) == 1
    for r in rs:  # no shared vCPU on a dedicated CPU
        p = got.guests.get(r.guest)
        if p is not None and r.placement == "shared":
            assert all(not (v & set(held)) and not (v & reserved) for v in p.vcpupin)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@settings(max_examples=60, deadline=None)
@given(rs=requests, reserve=st.sets(st.integers(0, 300), max_size=6), new=requests)
def test_invariants(name: str, rs: list[Request], reserve: set[int], new: list[Request]) -> None:
    t = TOPOLOGIES[name]
    reserved = frozenset(c for c in reserve if c < len(t.cpus))
    got = place(t, reserved, rs)
    check(t, reserved, rs, got)
    assert place(t, reserved, rs) == got  # the same input, the same placement
    # One more guest (or several) never moves a placed dedicated guest.
    more = [
        Request(f"new{i}", r.vcpus, r.placement, r.threads, r.emulator, r.nodes)
        for i, r in enumerate(new)
    ]
    after = place(t, reserved, rs + more, current=got.guests)
    check(t, reserved, rs + more, after)
    for r in rs:
        if r.placement == "dedicated" and r.guest in got.guests:
            assert after.guests[r.guest].dedicated == got.guests[r.guest].dedicated
            assert after.guests[r.guest].vcpupin == got.guests[r.guest].vcpupin


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@settings(max_examples=40, deadline=None)
@given(a=requests, b=requests)
def test_places_that_clash_are_never_both_kept(
    name: str, a: list[Request], b: list[Request]
) -> None:
    """Two placements made apart (two daemons' pins, a stale one) may claim the
    same CPUs; placed together, only one guest keeps a CPU, and the rest hold."""
    t = TOPOLOGIES[name]
    b = [Request(f"b{r.guest}", r.vcpus, r.placement, r.threads, r.emulator, r.nodes) for r in b]
    claims = {**place(t, frozenset(), a).guests, **place(t, frozenset(), b).guests}
    got = place(t, frozenset(), a + b, current=claims)
    check(t, frozenset(), a + b, got)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@settings(max_examples=40, deadline=None)
@given(rs=requests)
def test_a_place_reads_back_from_its_pins(name: str, rs: list[Request]) -> None:
    """What a daemon that restarts reads from the pins is the place it wrote."""
    t = TOPOLOGIES[name]
    got = place(t, frozenset(), rs)
    for r in rs:
        p = got.guests.get(r.guest)
        if p is None or r.placement != "dedicated":
            continue
        back = placed_from_pins(t, r, dict(enumerate(p.vcpupin)), p.emulatorpin)
        assert back is not None
        assert (back.vcpupin, back.dedicated) == (p.vcpupin, p.dedicated)


def test_a_guest_over_two_nodes_gets_the_nearest_two() -> None:
    """Four nodes of 2 CPUs; nodes 1 and 3 are near each other (11), the rest far
    (21): a guest that needs two nodes gets 1 and 3 (without distances: 0 and 1)."""
    flat = Topology.regular(4, 1, 2, 1)
    far = {(a, b): 10 if a == b else 21 for a in range(4) for b in range(4)}
    near = Topology(flat.cpus, distances={**far, (1, 3): 11, (3, 1): 11})
    wide = [Request("wide", 4, "dedicated", nodes=2)]
    assert place(near, frozenset(), wide).guests["wide"].nodes == (1, 3)
    assert place(flat, frozenset(), wide).guests["wide"].nodes == (0, 1)


def test_a_refusal_on_a_large_host_stays_on_one_short_line() -> None:
    """256 CPUs in 8 nodes, every node full of dedicated guests: refusing one
    1-vCPU isolate guest said ~1,100 characters. The line stays under 200 (what is
    needed, the two best nodes, two holders each, how many more), says "1 core"
    not "1 cores", and the full account (every node, every holder) is kept."""
    t = Topology.regular(8, 1, 16, 2)  # 8 nodes x 16 cores x SMT 2
    assert t.siblings(0) == (0, 128)
    reserved = frozenset(range(128, 256))  # one thread of every core: no core is whole
    fillers = [Request(f"guest-{i:02}", 3, "dedicated", "prefer", nodes=1) for i in range(40)]
    got = place(t, reserved, [*fillers, Request("late", 1, "dedicated", "isolate")])
    line = got.refused["late"]
    assert line.startswith("late: needs 1 dedicated core with isolated siblings; node ")
    assert len(line) < 200, line
    assert "(held by guest-00 and 4 others)" in line
    assert line.endswith("; and 6 more nodes")
    full = got.details["late"]
    assert all(f"node {n} has" in full for n in range(8))
    assert all(f"{r.guest} holds" in full for r in fillers if r.guest in got.guests)
    assert got.to_dict()["details"] == {"late": full}
