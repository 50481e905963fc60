"""The memory tuner's rounds: floors, distress first, weights, skips, giving back."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.engine.tuners import Action
from virtpolicy.engine.tuners.memory import GuestMemory, MemoryTuner, Move, Settings, plan
from virtpolicy.engine.tuners.monitor import GuestRates, Rates
from virtpolicy.engine.tuners.run import Tuners, Verdict
from virtpolicy.hypervisor.ksm import SCAN_CEILING, SCAN_FLOOR, SCAN_UP, Ksm
from virtpolicy.hypervisor.stats import HostMemory
from virtpolicy.policy.model import parse_policy
from virtpolicy.testing.memory import MemoryGuest, MemoryHypervisor

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
        guest("busy", 4, free=0.1),
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
    assert by["db"].target_kib == 2 * GIB + 4 * GIB * 5 // 100  # a step at once
    assert by["db"].reason.startswith("in distress")
    assert by["db"].urgent
    # What db got back is needed from the others on top of the host's own need.
    assert by["idle"].target_kib is not None
    assert by["idle"].target_kib < 4 * GIB


def test_a_guest_that_reports_nothing_is_left_where_it_is_with_the_reason() -> None:
    moves = plan(PRESSED, [guest("quiet", 4, free=None)])
    assert moves == [Move("quiet", None, "no statistics from its balloon driver: left as it is")]


def test_with_room_the_host_gives_back_only_to_the_guests_near_their_need() -> None:
    roomy = HostMemory(total_kib=16 * GIB, available_kib=10 * GIB)  # 37.5 % in use
    moves = plan(roomy, [guest("spare", 2, free=1.5), guest("tight", 2, free=0.1)])
    # spare has memory to spare: more would only become its cache; it gives
    # some back, though the host does not need it.
    assert moves == [
        Move(
            "tight",
            2 * GIB + 4 * GIB * 5 // 100,
            "the host is at 38 % in use, under its target: 205 MiB back",
        ),
        Move(
            "spare",
            2 * GIB - 4 * GIB * 5 // 100,
            "75 % of its memory unused: 205 MiB back to the host",
        ),
    ]


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


def rates(host: HostMemory, *rows: tuple[str, float, float, float], wall: float = 100.0) -> Rates:
    """A sample's rates: each row (guest, balloon GiB, usable GiB, major faults/s)."""
    guests = {
        name: GuestRates(
            guest=name,
            running=True,
            cpu_percent=1.0,
            vcpu_percent=(),
            vcpu_steal_percent=(),
            vcpu_wait_percent=(),
            memory_kib=int(actual * GIB),
            rss_kib=None,
            memory_max_kib=4 * GIB,
            cpu_ns=None,
            usable_kib=int(usable * GIB),
            guest_major_fault_rate=faults,
        )
        for name, actual, usable, faults in rows
    }
    return Rates(wall, 5.0, guests, (), host)


def test_the_tuner_moves_balloons_of_auto_guests_only_and_serves_distress_at_once() -> None:
    """Through the tuners' engine: the guest with balloon: auto is taken from (its
    decision says from, to and why), the one without is left alone; a guest in
    distress right after a move is given back its memory in the same breath,
    not held back by the dwell."""
    auto = {"memory": {"balloon": "auto", "floor": "1G"}}
    policies = {
        "idle": parse_policy({"guest": "idle", **auto}),
        "manual": parse_policy({"guest": "manual"}),
    }
    hv = MemoryHypervisor([MemoryGuest("idle", running=True), MemoryGuest("manual", running=True)])
    hv.open()
    engine = Tuners([MemoryTuner()], settings={"memory.target": 80.0}, clock=lambda: 100.0)

    def apply(action: Action) -> str | None:
        assert action.kind == "balloon"
        assert isinstance(action.value, int)
        hv.set_balloon(action.guest, action.value)
        return None

    first = rates(PRESSED, ("idle", 4, 3, 0.0), ("manual", 4, 3, 0.0))
    [decision] = engine.run([first], policies, 4, {}, {}, apply)
    assert (decision.guest, decision.verdict, decision.value) == (
        "idle",
        Verdict.APPLIED,
        4 * GIB - 4 * GIB * 5 // 100,
    )
    assert decision.reason.startswith("4096 MiB -> 3891 MiB: the host is at 88 % in use")
    assert hv.guests_by_name["idle"].balloon_kib == decision.value
    assert hv.guests_by_name["manual"].balloon_kib is None

    again = rates(PRESSED, ("idle", 3.8, 2.8, 0.0), wall=105.0)
    [held] = engine.run([first, again], policies, 4, {}, {}, apply)
    assert held.verdict is Verdict.RATE_LIMIT  # 5 s after the last move, dwell 15 s
    distress = rates(PRESSED, ("idle", 3.8, 0.1, 500.0), wall=110.0)
    [served] = engine.run([first, again, distress], policies, 4, {}, {}, apply)
    # Its usable memory fell by 2.7 GiB in one interval: twice that back, so all.
    assert (served.verdict, served.value) == (Verdict.APPLIED, 4 * GIB)
    assert "in distress" in served.reason


def test_ksm_runs_faster_while_the_host_needs_memory_then_stops_and_is_restored(
    tmp_path: Path,
) -> None:
    (tmp_path / "run").write_text("0\n")
    (tmp_path / "pages_to_scan").write_text("250\n")
    ksm = Ksm(tmp_path)

    def now() -> tuple[str, str]:
        return (
            (tmp_path / "run").read_text().strip(),
            (tmp_path / "pages_to_scan").read_text().strip(),
        )

    assert ksm.adjust(need=False) is None  # never started: left alone
    assert now() == ("0", "250")
    assert ksm.adjust(need=True) == (
        f"KSM running, scanning {SCAN_FLOOR} pages at a time: the host needs memory"
    )
    seen = [now()]
    for _ in range(6):
        ksm.adjust(need=True)
        seen.append(now())
    assert seen[1] == ("1", str(SCAN_FLOOR + SCAN_UP))
    assert seen[-1] == ("1", str(SCAN_CEILING))  # and no further
    while now()[0] == "1":
        ksm.adjust(need=False)
    assert now() == ("0", str(SCAN_FLOOR))
    ksm.restore()
    assert now() == ("0", "250")


def test_ksm_that_cannot_be_read_is_left_alone(tmp_path: Path) -> None:
    ksm = Ksm(tmp_path / "absent")
    assert ksm.adjust(need=True) is None
    ksm.restore()
    assert not (tmp_path / "absent").exists()


def test_a_guest_filling_its_memory_fast_is_in_distress_before_it_runs_out() -> None:
    from virtpolicy.engine.tuners.memory import running_out  # noqa: PLC0415

    # 160 MiB, 30 MiB usable: fine while it holds, and at 8 MiB a sample (22
    # MiB left by the next), not at 16 (14 MiB left: under 16 MiB).
    assert not running_out(160 * 1024, 30 * 1024, 0)
    assert not running_out(160 * 1024, 30 * 1024, 8 * 1024)
    assert running_out(160 * 1024, 30 * 1024, 16 * 1024)
    assert running_out(160 * 1024, 12 * 1024, 0)  # under 16 MiB now
    assert running_out(8 * 1024 * 1024, 300 * 1024, 0)  # under 5 % of 8 GiB now
    assert not running_out(8 * 1024 * 1024, 500 * 1024, 0)
    assert not running_out(160 * 1024, None, 0)  # it says nothing: not judged


def test_the_guests_the_tuner_leaves_alone_say_why_in_their_status(tmp_path: Path) -> None:
    """A guest with balloon: auto whose balloon driver says nothing, whose
    floor is above its defined memory, that is migrating away or whose memory
    is huge pages, is noted with the reason; the notes
    reach the guest's status, and go when they no longer hold."""
    from virtpolicy.engine.tuning.reconcile import Reconciler  # noqa: PLC0415
    from virtpolicy.store import SqlStore  # noqa: PLC0415

    auto = {"memory": {"balloon": "auto", "floor": "1G"}}
    names = ("quiet", "small", "fine", "moving", "huge")
    policies = {name: parse_policy({"guest": name, **auto}) for name in names}
    policies["small"] = parse_policy(
        {"guest": "small", "memory": {"balloon": "auto", "floor": "8G"}}
    )
    engine = Tuners([MemoryTuner()], clock=lambda: 100.0)
    sample = rates(PRESSED, ("small", 4, 3, 0.0), ("fine", 4, 3, 0.0))
    quiet = sample.guests["fine"]._replace(guest="quiet", usable_kib=None, unused_kib=None)
    moving = sample.guests["fine"]._replace(guest="moving", job="migration out")
    huge = sample.guests["fine"]._replace(guest="huge", hugepages=True)
    more = {"quiet": quiet, "moving": moving, "huge": huge}
    sample = Rates(sample.wall, 5.0, {**sample.guests, **more}, (), PRESSED)
    decisions = engine.run([sample], policies, 4, {}, {}, lambda _action: None)
    assert {d.guest for d in decisions} == {"fine"}  # the same figures, and moved
    notes = engine.notes()
    assert notes == {
        "moving": {"memory": "libvirt's migration out job runs: left as it is until it ends"},
        "huge": {
            "memory": "huge pages back its memory, which a balloon cannot free: left as it is"
        },
        "quiet": {"memory": "no statistics from its balloon driver: left as it is"},
        "small": {
            "memory": "memory.floor 8G is above its defined memory (4096 MiB): kept at its "
            "defined memory"
        },
    }
    store = SqlStore(str(tmp_path / "p.db"))
    reconciler = Reconciler(store, MemoryHypervisor([]))
    reconciler.tuner_notes(notes)
    assert reconciler.status_of("quiet")["tuning"] == notes["quiet"]  # type: ignore[index]
    reconciler.tuner_notes({})
    assert reconciler.status_of("quiet")["tuning"] == {}  # type: ignore[index]
    store.close()


def test_a_bad_memory_setting_stops_that_tuner_alone_and_says_why() -> None:
    """memory.step=0 (or a target over 100, or not a number) is refused by the
    memory tuner in one line naming it; the round goes on for the other tuners,
    and the failure shows until the setting is good again."""
    import pytest  # noqa: PLC0415

    from virtpolicy.engine.tuners.memory import settings_from  # noqa: PLC0415

    for bad in ({"memory.step": 0}, {"memory.target": 150}, {"memory.stall": "x"}):
        with pytest.raises(ValueError, match=re.escape(next(iter(bad)))):
            settings_from(bad)
    with pytest.raises(ValueError, match=r"memory\.target"):
        settings_from({"memory.target": float("nan")})
    assert settings_from({"memory.target": "70"}).target == 70.0

    class Pinner:  # a CPU tuner that always proposes the same pin
        name = "pinner"
        confirm = 1

        def decide(self, context: object) -> list[Action]:
            return [Action("pinner", "idle", "vcpupin", frozenset({1}), "always", vcpu=0)]

    auto = {"memory": {"balloon": "auto", "floor": "1G"}}
    policies = {"idle": parse_policy({"guest": "idle", **auto})}
    applied: list[Action] = []

    def apply(action: Action) -> str | None:
        applied.append(action)
        return None

    engine = Tuners([MemoryTuner(), Pinner()], settings={"memory.step": 0.0}, clock=lambda: 100.0)
    engine.run([rates(PRESSED, ("idle", 4, 3, 0.0))], policies, 4, {}, {}, apply)
    assert [a.tuner for a in applied] == ["pinner"]  # the memory tuner made no move
    assert engine.failures == {"memory": "memory.step: 0.0 is not a number from 0.5 to 100"}
    engine.settings = {"memory.step": 5.0}
    engine.run([rates(PRESSED, ("idle", 4, 3, 0.0))], policies, 4, {}, {}, apply)
    assert engine.failures == {}
    assert "memory" in {a.tuner for a in applied}
