"""The daemon's policy cache: incremental refreshes, and no write lost to a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtpolicy.engine import changes
from virtpolicy.engine.daemon.policycache import PolicyCache
from virtpolicy.errors import StoreError
from virtpolicy.store import SqlStore


def test_refresh_reads_what_was_written_since(tmp_path: Path) -> None:
    """A refresh applies the revisions written since the last one, deletes included."""
    store = SqlStore(str(tmp_path / "p.db"))
    try:
        changes.set_policy(store, "db", {"cpu": {"weight": 200}}, actor="t")
        cache = PolicyCache(store)
        assert cache.refresh() is None  # the first read is whole
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        changes.delete_policy(store, "db", actor="t")
        written = cache.refresh()
        assert [(r.guest, r.action) for r in written or []] == [
            ("web", "create"),
            ("db", "delete"),
        ]
        assert sorted(cache.all()) == ["web"]
        assert cache.refresh() == []
    finally:
        store.close()


def test_a_failed_refresh_does_not_skip_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store fails half-way through a refresh, the next refresh still reads
    the write."""
    store = SqlStore(str(tmp_path / "p.db"))
    try:
        cache = PolicyCache(store)
        cache.refresh()
        changes.set_policy(store, "web", {"cpu": {"weight": 300}}, actor="t")
        real = store.revisions_since

        def failing(after: int, limit: int, **_: object) -> list[object]:
            raise StoreError("store busy")

        monkeypatch.setattr(store, "revisions_since", failing)
        with pytest.raises(StoreError):
            cache.refresh()
        monkeypatch.setattr(store, "revisions_since", real)
        cache.refresh()
        policy = cache.get("web")
        assert policy is not None
        assert policy.cpu.weight == 300
    finally:
        store.close()


def test_a_scoped_cache_holds_its_guests_and_their_dependencies(tmp_path: Path) -> None:
    """Only guests in scope and what they depend on are held; a dependency named
    after its policy was passed over is read; a guest gone out of scope is let go."""
    store = SqlStore(str(tmp_path / "p.db"))
    mine = {"web"}
    try:
        changes.set_policy(store, "db", {"cpu": {"weight": 50}}, actor="t")
        changes.set_policy(store, "other", {"cpu": {"weight": 60}}, actor="t")
        changes.set_policy(store, "web", {"cpu": {"weight": 70}}, actor="t")
        cache = PolicyCache(store, scope=mine.__contains__)
        cache.refresh()
        assert sorted(cache.all()) == ["web"]
        assert cache.decoded == 1
        # db's revision came before; web now requires it: read it.
        changes.set_policy(store, "web", {"requires": {"db": {}}}, actor="t")
        changes.set_policy(store, "other", {"cpu": {"weight": 61}}, actor="t")
        cache.refresh()
        assert sorted(cache.all()) == ["db", "web"]
        assert cache.decoded == 3  # web's new revision, then db's; never other's
        # A guest that came into scope is read when asked, once.
        mine.add("other")
        assert cache.fetch(["other", "nobody"]) == {"other"}
        assert cache.fetch(["other", "nobody"]) == set()
        assert cache.decoded == 4
        mine.clear()
        cache.prune()
        assert sorted(cache.all()) == []
    finally:
        store.close()
