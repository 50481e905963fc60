"""The memory tuner's rounds: floors, distress first, weights, skips, giving back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.engine.tuners.memory import GuestMemory, HostMemory, Move, Settings, plan

GIB = 1024 * 1024  # KiB


def guest(name: str, actual: float, free: float | None, **more: object) -> GuestMemory:
    fields: dict[str, object] = {"maximum_kib": 4 * GIB, "floor_kib": 1 * GIB, **more}
    return GuestMemory(
        name, int(actual * GIB), free_kib=None if free is None else int(free * GIB), **fields
    )  # type: ignore[arg-type]


def targets(moves: list[Move]) -> dict[str, int | None]:
    return {m.guest: m.target_kib for m in moves}


PRESSED = HostMemory(total_kib=16 * GIB, available_kib=2 * GIB)  # 87.5 % in use


def test_under_pressure_memory_comes_from_the_guests_with_room_by_weight() -> None:
    """Two guests with the same room, weights 100 and 300: the first gives three
    times as much, the two together what the host needs; a guest with no room
    above its need gives nothing. With the default step, each gives at most 5 %
    of its memory in a round."""
    guests = [
        guest("light", 4, free=3),
        guest("heavy", 4, free=3, weight=300),
        guest("busy", 4, free=0.3),
    ]
    moves = plan(PRESSED, guests, Settings(step=50))
    taken = {m.guest: 4 * GIB - (m.target_kib or 0) for m in moves}
    assert set(taken) == {"light", "heavy"}
    assert abs(taken["light"] - 3 * taken["heavy"]) <= 3
    assert abs(sum(taken.values()) - int(0.075 * 16 * GIB)) <= 2  # 87.5 % down to 80 %
    assert all("the host is at 88 % in use (target 80 %)" in m.reason for m in moves)
    stepped = plan(PRESSED, guests)
    assert {4 * GIB - (m.target_kib or 0) for m in stepped} == {4 * GIB * 5 // 100}


def test_a_guest_in_distress_gets_its_memory_back_first_whatever_the_host() -> None:
    moves = plan(PRESSED, [guest("db", 2, free=0.1, distress=True), guest("idle", 4, free=3)])
    by = {m.guest: m for m in moves}
    assert by["db"].target_kib == 4 * GIB
    assert by["db"].reason.startswith("in distress")
    # What db got back is needed from the others on top of the host's own need.
    assert by["idle"].target_kib is not None
    assert by["idle"].target_kib < 4 * GIB


def test_a_guest_that_reports_nothing_is_left_where_it_is_with_the_reason() -> None:
    moves = plan(PRESSED, [guest("quiet", 4, free=None)])
    assert moves == [Move("quiet", None, "no statistics from its balloon driver: left as it is")]


def test_with_room_the_host_gives_back_the_guests_nearest_their_need_first() -> None:
    roomy = HostMemory(total_kib=16 * GIB, available_kib=10 * GIB)  # 37.5 % in use
    moves = plan(roomy, [guest("spare", 2, free=1.5), guest("tight", 2, free=0.1)])
    assert [m.guest for m in moves] == ["tight", "spare"]
    assert all(m.target_kib == 2 * GIB + 4 * GIB * 5 // 100 for m in moves)


def test_the_host_stalling_for_memory_takes_though_occupancy_looks_fine() -> None:
    stalling = HostMemory(total_kib=16 * GIB, available_kib=6 * GIB, stall=25.0)
    [move] = plan(stalling, [guest("idle", 4, free=3)])
    assert move.target_kib is not None
    assert move.target_kib < 4 * GIB
    assert "the host stalls for memory (25 % of the time)" in move.reason


def test_a_guest_below_its_floor_is_brought_back_to_it() -> None:
    [move] = plan(PRESSED, [guest("low", 0.5, free=0.1)])
    assert move.target_kib == GIB


@given(
    total=st.integers(4, 64),
    available=st.floats(0.0, 1.0),
    stall=st.none() | st.floats(0, 100),
    rows=st.lists(
        st.tuples(
            st.floats(0.1, 1.0),  # actual, of the maximum
            st.floats(0.0, 1.0),  # floor, of the maximum
            st.none() | st.floats(0.0, 1.0),  # free, of actual
            st.integers(1, 10000),
            st.booleans(),
        ),
        max_size=8,
    ),
)
def test_no_target_leaves_the_floor_and_defined_memory(
    total: int,
    available: float,
    stall: float | None,
    rows: list[tuple[float, float, float | None, int, bool]],
) -> None:
    host = HostMemory(total * GIB, int(total * GIB * available), stall)
    guests = [
        GuestMemory(
            f"g{i}",
            actual_kib=max(1, int(4 * GIB * a)),
            maximum_kib=4 * GIB,
            floor_kib=int(4 * GIB * f),
            weight=w,
            free_kib=None if free is None else int(4 * GIB * a * free),
            distress=d,
        )
        for i, (a, f, free, w, d) in enumerate(rows)
    ]
    moves = plan(host, guests, Settings())
    assert len({m.guest for m in moves}) == len(moves)  # one move per guest at most
    by_name = {g.name: g for g in guests}
    for m in moves:
        g = by_name[m.guest]
        if m.target_kib is not None:
            assert g.floor_kib <= m.target_kib <= g.maximum_kib, (m, g)
            assert m.target_kib != g.actual_kib, m
