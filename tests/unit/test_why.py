"""Why a guest is not as its policy says: one order for every view."""

from __future__ import annotations

from virtpolicy.engine.why import reasons


def test_reasons_come_most_severe_first_with_driver_notices_last() -> None:
    """A lost host and a policy error before what holds a guest back and a
    refused placement; drift after; what the driver cannot do last."""
    row = {
        "guest": "web",
        "host": "h1",
        "state": "unknown",
        "error": "policy not enforced: the stored policy no longer loads",
        "problems": [
            "scheduler parameters: not supported by the test driver",
            "placement refused: web: needs 4 dedicated host CPUs; 2 are free",
            "store: unreachable (this host enforces the policies as last read)",
        ],
        "drift": {"vcpupin.0": {"actual": "0-3", "desired": "1"}},
    }
    found = reasons(row, blocked="web ← db: db is shut off on h2")
    assert [(r["severity"], r["kind"]) for r in found] == [
        ("error", "host lost"),
        ("error", "not enforced"),
        ("error", "store unreachable"),
        ("warning", "placement refused"),
        ("warning", "held back"),
        ("info", "drift"),
        ("notice", "driver"),
    ]
    assert found[0]["text"] == "its host h1 is lost: state unknown"
    assert found[4]["text"] == "held back: web ← db: db is shut off on h2"
    assert found[5]["text"] == "drift being put back: vcpupin.0"


def test_a_running_guest_is_never_held_back_and_unpinned_only_while_running() -> None:
    """What holds a guest back matters only while it is down; a dedicated guest
    with no place is "running unpinned" while it runs, a problem otherwise."""
    unplaced = "cpu.placement: dedicated: not placed yet; nothing is pinned for it"
    running = reasons({"state": "running", "problems": [unplaced]}, blocked="web ← db")
    assert [(r["severity"], r["kind"]) for r in running] == [("warning", "running unpinned")]
    down = reasons({"state": "shut off", "problems": [unplaced]})
    assert [r["kind"] for r in down] == ["problem"]
    assert reasons({"state": "running"}) == []
