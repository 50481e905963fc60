"""Every stored policy for the fleet's pages: read whole once, kept current from
the revisions since, let go when no page asks."""

from __future__ import annotations

from pathlib import Path

from virtpolicy.engine import changes
from virtpolicy.engine.daemon.everypolicy import IDLE_S, EveryPolicy
from virtpolicy.store import SqlStore


def test_every_policy_follows_writes_and_is_let_go_when_no_page_asks(tmp_path: Path) -> None:
    store = SqlStore(str(tmp_path / "p.db"))
    now = [0.0]
    every = EveryPolicy(store, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        changes.set_policy(store, name, {"labels": {"n": name}}, actor="t")
    assert {g: p.labels["n"] for g, p in every.get().items()} == {"a": "a", "b": "b", "c": "c"}
    # Written meanwhile: read from the revisions since, not whole again.
    changes.set_policy(store, "b", {"labels": {"n": "B"}}, actor="t")
    changes.set_policy(store, "d", {"requires": {"a": {}}}, actor="t")
    changes.delete_policy(store, "c", actor="t")
    seen = every.get()
    assert sorted(seen) == ["a", "b", "d"]
    assert seen["b"].labels["n"] == "B"
    assert seen["d"].dependencies() == [("a", "requires")]
    assert every.holding == 3
    now[0] += IDLE_S / 2
    every.let_go_if_idle()
    assert every.holding == 3  # asked recently
    now[0] += IDLE_S + 1
    every.let_go_if_idle()
    assert every.holding == 0
    assert sorted(every.get()) == ["a", "b", "d"]  # read whole again when asked
    store.close()
