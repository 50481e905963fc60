"""The SQL store on a real SQLite file and on a real PostgreSQL (each test runs on
both): revisions, concurrency, atomicity."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import threading
import time
import types
import uuid
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from tests.conftest import BROKEN_DOC, Cli, break_policy, snapshot
from virtpolicy.engine.daemon.policycache import PolicyCache
from virtpolicy.errors import ConflictError, CycleError, NotFoundError, PolicyError, StoreError
from virtpolicy.policy.model import parse_policy
from virtpolicy.store import Delete, Put, SqlStore, migrate, sqlengine
from virtpolicy.store.base import GuestState, HostRecord, Revision
from virtpolicy.store.feed import CHANNEL, DirectoryFeed, PostgresFeed, channel
from virtpolicy.store.schema import SCHEMA_REVISION, metadata

pytestmark = pytest.mark.integration


@pytest.fixture
def db(any_db: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_db


def p(guest: str, **fields: object) -> Put:
    return Put(parse_policy({"guest": guest, **fields}))


def test_schema_revision_is_alembic_head() -> None:
    """The schema revision the code expects is the newest migration."""
    config = Config()
    config.set_main_option("script_location", "virtpolicy.store:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


def plain_engine(db: str) -> Engine:
    """An engine on the store ``db`` with none of the store's own settings."""
    return create_engine(sqlengine.to_url(db), poolclass=NullPool)


def describe(url: str) -> dict[str, object]:
    """Everything of a store's schema that its code relies on, and every row."""
    engine = plain_engine(url)
    try:
        with engine.connect() as conn:
            seen = inspect(conn)
            tables: dict[str, object] = {}
            for name in sorted(seen.get_table_names()):
                columns = [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in seen.get_columns(name)
                ]
                tables[name] = {
                    "columns": columns,
                    "key": seen.get_pk_constraint(name)["constrained_columns"],
                    "indexes": sorted(
                        (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                        for i in seen.get_indexes(name)
                    ),
                    "unique": sorted(
                        (u["name"], tuple(u["column_names"]))
                        for u in seen.get_unique_constraints(name)
                    ),
                    "foreign": sorted(
                        (
                            tuple(f["constrained_columns"]),
                            f["referred_table"],
                            tuple(f["referred_columns"]),
                            tuple(sorted(f["options"].items())),
                        )
                        for f in seen.get_foreign_keys(name)
                    ),
                    "rows": sorted(map(tuple, conn.execute(text(f"SELECT * FROM {name}")))),
                }
            return tables
    finally:
        engine.dispose()


def test_a_new_store_is_what_the_migrations_make(db: str) -> None:
    """A new store is made from the tables of ``schema.py`` at once, without
    Alembic: the same tables, columns, keys, indexes, constraints and first rows
    as every migration run from an empty database makes, on both backends."""
    SqlStore(db).close()
    made = describe(db)
    assert set(made) == {*metadata.tables, "alembic_version"}
    engine = plain_engine(db)
    try:
        with engine.begin() as conn:
            for name in made:
                conn.execute(text(f"DROP TABLE {name}{' CASCADE' if '://' in db else ''}"))
        assert describe(db) == {}
        with engine.begin() as conn:
            migrate._upgrade(conn, None, engine.url)  # every migration, from nothing
    finally:
        engine.dispose()
    assert describe(db) == made


def test_new_store_file_is_private(tmp_path: Path) -> None:
    """The SQLite file is created 0600 in a 0700 directory."""
    db = tmp_path / "state" / "policies.db"
    SqlStore(str(db)).close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700


def test_write_then_read(store: SqlStore) -> None:
    """A written policy reads back equal, at revision 1, with its writer."""
    [outcome] = store.write([p("web", cpu={"weight": 200})], "alice")
    assert (outcome.action, outcome.revision) == ("create", 1)
    got = store.get("web")
    assert got.policy.cpu.weight == 200
    assert (got.revision, got.updated_by) == (1, "alice")


def test_every_change_is_a_revision(store: SqlStore) -> None:
    """Create, update, delete and re-create each add a revision; history keeps all."""
    store.write([p("web", cpu={"weight": 1})], "a")
    store.write([p("web", cpu={"weight": 2})], "b")
    store.write([Delete("web")], "c")
    store.write([p("web", cpu={"weight": 3})], "d")
    history = store.history("web")
    assert [(r.revision, r.action, r.actor) for r in history] == [
        (1, "create", "a"),
        (2, "update", "b"),
        (3, "delete", "c"),
        (4, "create", "d"),
    ]
    assert history[2].policy is None
    assert store.revision("web", 2).policy.cpu.weight == 2  # type: ignore[union-attr]
    assert store.get("web").revision == 4


def test_writing_the_same_policy_is_no_revision(store: SqlStore) -> None:
    """An unchanged policy makes no revision and does not move the counter."""
    store.write([p("web", cpu={"weight": 1})], "a")
    before = store.global_revision()
    [outcome] = store.write([p("web", cpu={"weight": 1})], "a")
    assert outcome.action == "unchanged"
    assert store.global_revision() == before
    assert len(store.history("web")) == 1


def test_global_revision_counts_every_write(db: str, store: SqlStore) -> None:
    """The global revision grows by one per changed guest, whoever writes."""
    assert store.global_revision() == 0
    store.write([p("a"), p("b")], "x")
    assert store.global_revision() == 2
    SqlStore(db).write([p("c")], "other process")
    assert store.global_revision() == 3
    assert [r.seq for g in ("a", "b", "c") for r in store.history(g)] == [1, 2, 3]


def test_stale_write_conflicts_and_changes_nothing(db: str, store: SqlStore) -> None:
    """A write expecting an old revision fails with ConflictError, writing nothing."""
    store.write([p("web", cpu={"weight": 1})], "a")
    store.write([p("web", cpu={"weight": 2})], "b")
    before = snapshot(db)
    with pytest.raises(ConflictError) as info:
        store.write([Put(parse_policy({"guest": "web", "cpu": {"weight": 3}}), expect=1)], "c")
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert snapshot(db) == before


def test_expect_zero_means_new(store: SqlStore) -> None:
    """Revision 0 expects no policy yet: it creates once, then conflicts."""
    store.write([Put(parse_policy({"guest": "web"}), expect=0)], "a")
    with pytest.raises(ConflictError):
        store.write([Put(parse_policy({"guest": "web", "cpu": {"cap": 5}}), expect=0)], "a")


def test_multi_guest_write_is_all_or_nothing(db: str, store: SqlStore) -> None:
    """If one change in a write conflicts, none of the others is written."""
    store.write([p("db")], "a")
    before = snapshot(db)
    with pytest.raises(ConflictError):
        store.write(
            [p("web"), p("api"), Put(parse_policy({"guest": "db", "cpu": {"cap": 9}}), 7)], "a"
        )
    assert snapshot(db) == before


def test_cycle_is_refused_and_nothing_written(db: str, store: SqlStore) -> None:
    """A write that would close a cycle with stored policies is refused, named."""
    store.write(
        [p("db"), p("api", requires=[{"guest": "db"}]), p("web", requires=[{"guest": "api"}])], "a"
    )
    before = snapshot(db)
    with pytest.raises(CycleError) as info:
        store.write([p("cache"), p("db", wants=[{"guest": "web"}])], "a")
    assert str(info.value) == "dependency cycle: db -> web -> api -> db"
    assert snapshot(db) == before


def test_deleting_a_dependency_leaves_a_leaf(store: SqlStore) -> None:
    """Deleting db's policy keeps web's dependency on db, now a leaf."""
    store.write([p("db"), p("web", requires=[{"guest": "db"}])], "a")
    store.write([Delete("db")], "a")
    assert store.edges() == {"web": [("db", "requires")]}


def test_missing_things_are_not_found(store: SqlStore) -> None:
    """Reading or deleting what does not exist raises NotFoundError."""
    store.write([p("web")], "a")
    with pytest.raises(NotFoundError, match="nope: no policy"):
        store.get("nope")
    with pytest.raises(NotFoundError):
        store.history("nope")
    with pytest.raises(NotFoundError, match="web: no revision 9"):
        store.revision("web", 9)
    with pytest.raises(NotFoundError):
        store.write([Delete("nope")], "a")


def test_same_guest_twice_in_one_write(store: SqlStore) -> None:
    """One write may not name a guest twice."""
    with pytest.raises(PolicyError, match='guest "web" appears twice'):
        store.write([p("web"), p("web", cpu={"cap": 5})], "a")


def test_labels_select(store: SqlStore) -> None:
    """list() with labels returns only guests having all of them."""
    store.write(
        [
            p("a", labels={"tier": "fe", "app": "shop"}),
            p("b", labels={"tier": "fe"}),
            p("c", labels={"tier": "db", "app": "shop"}),
        ],
        "x",
    )
    assert [s.policy.guest for s in store.list_policies({"tier": "fe"})] == ["a", "b"]
    assert [s.policy.guest for s in store.list_policies({"tier": "fe", "app": "shop"})] == ["a"]
    assert store.list_policies({"tier": "none"}) == []


def test_dry_run_writes_nothing(db: str, store: SqlStore) -> None:
    """A dry run reports outcomes but leaves the store as it was."""
    store.write([p("a")], "x")
    before = snapshot(db)
    outcomes = store.write([p("a", cpu={"cap": 5}), p("b")], "x", dry_run=True)
    assert [o.action for o in outcomes] == ["update", "create"]
    assert snapshot(db) == before


def test_concurrent_writers_never_lose_a_revision(db: str, store: SqlStore) -> None:
    """Writers in several threads, each with its own store, all land, serialized."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        s = SqlStore(db)
        try:
            for i in range(10):
                s.write([p(f"g{n}-{i}", cpu={"weight": i + 1})], f"w{n}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.global_revision() == 40
    seqs = sorted(r.seq for g in store.guests() for r in store.history(g))
    assert seqs == list(range(1, 41))


def test_unknown_schema_is_refused(db: str, store: SqlStore) -> None:
    """A store with a schema revision this code does not know is refused clearly."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'abcd'")
    with pytest.raises(StoreError, match="schema revision 'abcd' is unknown"):
        SqlStore(db)


def test_a_newer_schema_that_only_added_is_used_as_it_is(db: str, store: SqlStore) -> None:
    """A fleet is upgraded host by host: a daemon of the older release meets the
    schema a newer one migrated to. When the newer migrations only added (a
    table, a column with a default) and left ``schema_compat`` alone, the older
    code reads and writes the store as before, and migrates nothing."""
    store.write([p("db", cpu={"weight": 300})], "alice")
    with store.engine.begin() as conn:  # what a later release's additive migration does
        conn.exec_driver_sql("CREATE TABLE later_things (id INTEGER PRIMARY KEY, note TEXT)")
        conn.exec_driver_sql("ALTER TABLE policies ADD COLUMN later_note TEXT DEFAULT ''")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0042'")
    older = SqlStore(db)
    try:
        assert older.get("db").policy.cpu.weight == 300
        older.write([p("web", requires=[{"guest": "db"}])], "bob")
        job = older.add_job("start", {"guests": ["web"]}, ["db", "web"], runner="cli", host="h",
                            process="1:1", actor="bob")  # fmt: skip
        assert older.job(job.id).guests == ("db", "web")
        assert [r.revision for r in older.history("web")] == [1]
    finally:
        older.close()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0042"


def test_a_newer_schema_that_older_code_cannot_use_names_the_release(
    db: str, store: SqlStore
) -> None:
    """A newer release whose migration an older daemon could not live with says
    so in ``schema_compat``: the older code refuses to open the store, naming
    the release to install, and changes nothing."""
    store.write([p("db", cpu={"weight": 300})], "alice")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0042'")
        conn.exec_driver_sql(
            "UPDATE schema_compat SET readers_from = '0040', needs_version = '3.1.0'"
        )

    def state() -> tuple[object, ...]:
        with store.engine.connect() as conn:
            stamp = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        return stamp, store.global_revision(), [s.policy for s in store.list_policies()]

    before = state()
    with pytest.raises(
        StoreError, match=r"needs virtpolicy 3\.1\.0 or newer.*install virtpolicy 3\.1\.0"
    ):
        SqlStore(db)
    assert state() == before


def test_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    """A store path that cannot be created is reported, not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        SqlStore(str(blocker / "sub" / "p.db"))


def test_postgres_feed_hears_each_write_by_name(db: str, store: SqlStore) -> None:
    """On PostgreSQL a write notifies every listener when it commits, naming the
    revisions and guests written: the feed returns on the notification (a wait
    that times out returns False). On SQLite the kernel wakes the feed when the
    database's directory is written (inotify), and it compares its marker: a
    write by another process ends a wait long before its timeout."""
    feed = store.change_feed()
    stop = threading.Event()
    try:
        assert feed.wait(0.01, stop)  # the first look: anything may have changed
        if "://" not in db:
            assert isinstance(feed, DirectoryFeed)
            assert not feed.wait(0.01, stop)  # nothing written since
            woken: list[tuple[bool, float]] = []

            def listen() -> None:
                t = time.monotonic()
                changed = feed.wait(60, stop)
                woken.append((changed, time.monotonic() - t))

            listener = threading.Thread(target=listen)
            listener.start()
            time.sleep(0.2)
            SqlStore(db).write([p("web")], "other process")
            listener.join(60)
            [(changed, waited)] = woken
            assert changed
            assert waited < 30  # woken by the write, not by the 60 s poll
            assert feed.wakes_on_write  # so the daemon waits long between looks
            # Stopping ends a long wait at once, and it reports no change.
            woken.clear()
            listener = threading.Thread(target=listen)
            listener.start()
            time.sleep(0.2)
            stop.set()
            feed.interrupt()
            listener.join(60)
            [(changed, waited)] = woken
            assert not changed
            assert waited < 30
            return
        assert isinstance(feed, PostgresFeed)
        assert feed.written() is None  # before it listened: only the store can tell
        assert not feed.wait(0.1, stop)  # nothing written: the wait times out
        heard: list[bool] = []
        listener = threading.Thread(target=lambda: heard.append(feed.wait(60, stop)))
        listener.start()
        SqlStore(db).write([p("web"), p("db")], "other process")
        listener.join(60)
        assert heard == [True]
        assert feed.heard.splitlines()[0] == "1-2 web,db"
        # The notification carried the revisions themselves: a reader needs no query.
        carried = feed.written()
        assert carried == SqlStore(db).revisions_since(0, 10)
        assert feed.written() == []  # taken
    finally:
        stop.set()
        feed.close()


def test_stores_in_two_schemas_of_one_database_never_hear_each_other(
    pg_db: str, pg_url: str
) -> None:
    """Two stores on one PostgreSQL database, in schemas of their own: a write to
    one wakes only the other's listeners of the same store (each store's channel
    is its own; a daemon took another store's notified revisions as its own)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    other_db = f"{pg_url}&options=-csearch_path%3D{schema}"
    mine, other = SqlStore(pg_db), SqlStore(other_db)
    feed, stop = mine.change_feed(), threading.Event()
    try:
        feed.wait(0.01, stop)  # listening from now on
        assert feed.written() is None  # before it listened: only the store can tell
        other.write([p("web")], "another fleet")
        assert not feed.wait(1.0, stop)  # not a word of the other store's write
        mine.write([p("db")], "this fleet")
        assert feed.wait(30, stop)
        assert [r.guest for r in feed.written() or []] == ["db"]
    finally:
        stop.set()
        feed.close()
        mine.close()
        other.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def test_a_schemas_channel_is_its_own() -> None:
    assert channel("public") == CHANNEL  # as every release before
    names = {channel(f"t_{i}") for i in range(100)}
    assert len(names) == 100
    assert all(len(n) <= 63 and n.isidentifier() for n in names)  # a PostgreSQL name


def test_hosts_register_beat_leave_and_get_lost(db: str, store: SqlStore) -> None:
    """A host registers up, beats, is shown lost after three silent intervals, and
    leaves cleanly; its guests' states go with it. Another process sees it all."""
    t = time.time()
    a = HostRecord("host-a", "qemu:///system", 8, {"sockets": 1}, "0.1.0", "up", 2.0, t, "t")
    store.register_host(a)
    store.register_host(dataclasses.replace(a, name="host-b", uri="test:///x"))
    other = SqlStore(db)
    ha, hb = other.hosts()
    assert (ha.name, ha.topology, ha.shown_state(t + 5)) == ("host-a", {"sockets": 1}, "up")
    assert ha.shown_state(time.time() + 6.5) == "lost"  # 6.5 s > 3 beats of 2 s
    assert ha.memory is None  # not sampled yet
    store.heartbeat("host-a")
    t = time.time()
    assert other.hosts()[0].shown_state(t + 5.5) == "up"
    # A beat may carry the host's memory; one without it leaves it as it was.
    memory = {"total_kib": 8192.0, "available_kib": 2048.0, "stall_percent": None}
    store.heartbeat("host-a", memory)
    # And where its placer put its guests, kept until a beat brings another.
    assert other.hosts()[0].placement is None
    store.heartbeat("host-a", None, {"in_play": False, "cpus": [{"cpu": 0, "use": "free"}]})
    store.heartbeat("host-a")
    assert other.hosts()[0].placement == {"in_play": False, "cpus": [{"cpu": 0, "use": "free"}]}
    store.heartbeat("host-a")
    assert other.hosts()[0].memory == memory
    store.heartbeat("host-a", {"total_kib": float("nan"), "available_kib": True})
    assert other.hosts()[0].memory == dict.fromkeys(memory)  # never a value it can't read
    store.heartbeat("host-a", memory)
    seen = [
        GuestState("db", "host-a", "u-1", "running", {"agent": True}, 106.0),
        GuestState("web", "host-a", "u-2", "shut off", {}, 106.0),
    ]
    store.publish_guests("host-a", seen, [])
    store.publish_guests("host-b", [GuestState("db", "host-b", "u-9", "running", {}, 106.0)], [])
    assert [(g.guest, g.host, g.running) for g in other.guest_states()] == [
        ("db", "host-a", True),
        ("db", "host-b", True),
        ("web", "host-a", False),
    ]
    assert other.guest_states("host-a")[0].ready == {"agent": True}
    store.publish_guests("host-a", [dataclasses.replace(seen[1], state="running")], ["db"])
    assert [(g.guest, g.state) for g in other.guest_states("host-a")] == [("web", "running")]
    store.leave_host("host-b")
    assert hb.name == "host-b"
    assert other.hosts()[1].shown_state(1e12) == "left"  # a clean stop is never lost
    assert other.guest_states("host-b") == []
    other.close()


def test_job_steps_are_claimed_once_by_their_own_host(db: str, store: SqlStore) -> None:
    """Each guest of a job is a step of its host. Claimers racing in several
    threads (each with its own store) take every step exactly once, and only
    their own host's; results land in the steps, and the job ends once."""
    guests = [f"g{i}" for i in range(40)]
    hosts = {g: ("host-a" if i % 2 else "host-b") for i, g in enumerate(guests)}
    job = store.add_job(
        "start", {"all": True}, guests, runner="daemon", host="host-a", process="1:1",
        actor="alice", hosts=hosts,
    )  # fmt: skip
    assert job.hosts == hosts
    assert set(job.unclaimed) == set(guests)
    assert store.pending_jobs("host-b") == [job.id]
    taken: dict[str, list[str]] = {"host-a": [], "host-b": []}
    errors: list[BaseException] = []

    def claimer(host: str) -> None:
        s = SqlStore(db)
        try:
            taken[host].extend(s.claim_steps(job.id, host))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=claimer, args=(h,)) for h in ["host-a", "host-b"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(taken["host-a"]) == sorted(g for g in guests if hosts[g] == "host-a")
    assert sorted(taken["host-b"]) == sorted(g for g in guests if hosts[g] == "host-b")
    assert store.pending_jobs("host-a") == store.pending_jobs("host-b") == []
    assert store.claim_steps(job.id, "host-a") == []
    done = {"guest": "g1", "result": "started", "seconds": 1.5, "detail": ""}
    store.update_job(job.id, [{"guest": "g0", "result": "starting", "seconds": 0.1, "detail": ""}])
    store.update_job(job.id, [done])
    # A step that is done stays done: a late writer does not undo it.
    store.update_job(job.id, [{**done, "result": "waiting"}])
    got = SqlStore(db).job(job.id)
    assert [(r["guest"], r["host"], r["result"]) for r in got.results] == [
        ("g0", "host-b", "starting"),
        ("g1", "host-a", "started"),
    ]
    assert got.unclaimed == ()
    assert store.update_job(job.id, [], state="succeeded", detail="ok")
    assert not store.update_job(job.id, [], state="failed", detail="late")
    assert (store.job(job.id).state, store.job(job.id).detail) == ("succeeded", "ok")


def test_a_cache_on_postgresql_reads_a_write_from_its_notification(
    db: str, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a daemon's cache takes a write from the notification that
    announced it, with no query; a gap in what it heard (here: a notification
    too big to carry its revisions) makes it read the store. On SQLite it reads
    the store each time."""
    cache = PolicyCache(store)
    feed = cache.feed()
    stop = threading.Event()
    try:
        assert feed.wait(0.01, stop)
        cache.refresh()
        reads: list[int] = []
        real = store.revisions_since

        def counted(seq: int, limit: int, **kwargs: object) -> list[Revision]:
            reads.append(seq)
            return real(seq, limit, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "revisions_since", counted)
        SqlStore(db).write([p("web", cpu={"weight": 300})], "other process")
        while not feed.wait(0.05, stop):
            pass
        assert [r.guest for r in cache.refresh() or []] == ["web"]
        assert cache.get("web") is not None
        assert cache.get("web").cpu.weight == 300  # type: ignore[union-attr]
        assert reads == ([] if "://" in db else [0])
        big = [p(f"g{i:04}-{'x' * 40}", labels={"k": "v" * 60}) for i in range(60)]
        SqlStore(db).write(big, "other process")
        while not feed.wait(0.05, stop):
            pass
        assert len(cache.refresh() or []) == 60
        assert reads[-1] == 1  # read from the store, after revision 1
        assert len(cache.all()) == 61
    finally:
        stop.set()
        feed.close()


def test_eight_long_unicode_names_in_one_write(store: SqlStore) -> None:
    """Eight guests of 254 emoji and a digit each, in one write: accepted on both
    stores (PostgreSQL refused it, "payload string too long": the notification was
    cut at 7,000 characters, and its limit is 8,000 bytes)."""
    guests = ["\U0001f601" * 254 + str(i) for i in range(8)]
    store.write([p(g) for g in guests], "alice")
    assert store.guests() == sorted(guests)


def test_a_broken_policy_is_shown_and_can_be_replaced_or_deleted(store: SqlStore) -> None:
    """A stored policy that no longer validates (here what a bad write once left:
    ``tcp:[]:80``) is named by get and policies_and_broken in one line, left out of
    the list, and can be deleted, or replaced whole; the others read on."""
    store.write([p("db"), p("x2"), p("web", cpu={"weight": 5})], "alice")
    break_policy(store, "x2", BROKEN_DOC)
    with pytest.raises(StoreError) as info:
        store.get("x2")
    assert "x2: the stored policy (revision 1) no longer loads" in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.http_status == 409
    assert [s.policy.guest for s in store.list_policies()] == ["db", "web"]
    [broken] = store.policies_and_broken()[1]
    assert (broken.guest, broken.revision) == ("x2", 1)
    assert "tcp:[]:80" in broken.reason
    assert "\n" not in broken.reason
    [rev] = store.history("x2")
    assert rev.policy is None
    assert "tcp:[]:80" in rev.broken
    # Replaced whole: an update, revision 2; then it loads.
    [outcome] = store.write([p("x2", cpu={"weight": 7})], "bob")
    assert (outcome.action, outcome.revision, outcome.before) == ("update", 2, None)
    assert store.get("x2").policy.cpu.weight == 7
    assert store.policies_and_broken()[1] == []
    # Broken again, then deleted.
    break_policy(store, "x2", BROKEN_DOC)
    [outcome] = store.write([Delete("x2")], "bob")
    assert (outcome.action, outcome.revision) == ("delete", 3)
    assert store.guests() == ["db", "web"]


def test_a_broken_policy_never_stops_the_cache_taking_other_changes(store: SqlStore) -> None:
    """A daemon's cache reads past a broken policy: the guest is reported broken
    and left alone, and a later write of another guest is taken (it once stopped
    taking every change: "policy set cache --weight 321 was never enforced")."""
    store.write([p("cache"), p("x2")], "alice")
    break_policy(store, "x2", BROKEN_DOC)
    cache = PolicyCache(store)
    assert cache.refresh() is None  # a whole read
    assert set(cache.all()) == {"cache"}
    assert "tcp:[]:80" in cache.broken()["x2"]
    store.write([p("cache", cpu={"weight": 321})], "alice")
    assert [r.guest for r in cache.refresh() or []] == ["cache"]
    assert cache.get("cache").cpu.weight == 321  # type: ignore[union-attr]
    # A broken revision read incrementally, with another guest's change after it.
    store.write([p("x3")], "alice")
    break_policy(store, "x3", '{"guest":"x3","cpu":{"weight":0}}')
    store.write([p("cache", cpu={"weight": 322})], "alice")
    assert [r.guest for r in cache.refresh() or []] == ["x3", "cache"]
    assert "cpu.weight: 0 is below the minimum 1" in cache.broken()["x3"]
    assert "x3" not in cache.all()
    assert cache.get("cache").cpu.weight == 322  # type: ignore[union-attr]
    store.write([p("x2", cpu={"weight": 9})], "alice")
    cache.refresh()
    assert "x2" not in cache.broken()
    assert cache.get("x2").cpu.weight == 9  # type: ignore[union-attr]


RACE = """
import sys, time
from virtpolicy.store import SqlStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
store = SqlStore(sys.argv[1])
print(store.global_revision())
store.close()
"""


def test_processes_starting_at_once_on_a_new_store_all_open_it(db: str) -> None:
    """Six processes open a new store at the same instant: each finds the schema
    made once, none fails (on PostgreSQL one of three CLIs once exited with a
    duplicate key in pg_type, and a daemon of a fleet's first start died)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    at = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, db, at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    answers = [p.communicate(timeout=120) for p in procs]
    # Each failure's traceback whole: where it waited is what tells (pytest would
    # cut a list of them short).
    failed = "\n".join(err for p, (_, err) in zip(procs, answers, strict=True) if p.returncode)
    assert [p.returncode for p in procs] == [0] * 6, failed
    assert [out.strip() for out, _ in answers] == ["0"] * 6
    SqlStore(db).close()


def test_a_new_sqlite_store_waits_for_another_process_migrating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock of a new store (as while it migrates
    the schema) for longer than a write waits: opening the store waits for it
    and migrates after, instead of failing as busy (six CLIs starting at once on
    a loaded host once failed so)."""
    monkeypatch.setattr(sqlengine, "BUSY_TIMEOUT_MS", 100)  # a write's patience
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    let_go = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    let_go.start()
    try:
        store = SqlStore(str(path))
        assert store.global_revision() == 0
        store.close()
    finally:
        let_go.join()
        holder.close()


def test_a_host_whose_clock_lags_is_neither_lost_nor_missed(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose clock is 30 s behind (PostgreSQL, a fleet): its heartbeats and
    guest states are stamped by the database's clock, so another host sees it up
    and reads its rows incrementally (it was always lost past 6 s, and its rows
    were never read past 10 s); its offset is kept and shown."""
    from virtpolicy.engine import fleetview  # noqa: PLC0415
    from virtpolicy.store import sqlfleet  # noqa: PLC0415

    lagging, reader = SqlStore(pg_db), SqlStore(pg_db)
    real = time.time
    monkeypatch.setattr(sqlfleet, "time", types.SimpleNamespace(time=lambda: real() - 30))
    record = HostRecord("host-b", "qemu:///system", 4, {}, "0.1.0", "up", 2.0, real() - 30, "t")
    lagging.register_host(record)
    lagging.heartbeat("host-b")
    lagging.publish_guests("host-b", [GuestState("b1", "host-b", "u", "running", {}, 0.0)], [])
    monkeypatch.undo()
    [host] = reader.hosts()
    assert host.shown_state(time.time()) == "up"
    assert -31 < host.clock_offset_s < -29
    assert [g.guest for g in reader.guest_states(since=time.time() - 5)] == ["b1"]
    [row] = fleetview.hosts(reader)
    assert row["heartbeat_age_s"] < 5
    assert -31 < row["clock_offset_s"] < -29
    shown = Cli(pg_db)("hosts").stdout.splitlines()[1]
    assert shown.split()[:2] == ["host-b", "up"]
    assert "(clock 30.0s behind the store's)" in shown or "(clock 29.9s behind" in shown
    lagging.close()
    reader.close()


def test_steps_a_dead_daemon_claimed_are_taken_up_again(db: str, store: SqlStore) -> None:
    """A daemon killed while it ran its steps leaves them claimed; the host's next
    daemon makes them pending again (its own, of running jobs only), and takes
    them up: the job no longer waits for ever."""
    job = store.add_job("start", {}, ["a1", "b1", "b2"], runner="daemon", host="host-a",
                        process="1:1", actor="t", hosts={"b1": "host-b", "b2": "host-b"})  # fmt: skip
    assert store.claim_steps(job.id, "host-b") == ["b1", "b2"]
    assert store.claim_steps(job.id, "host-a") == ["a1"]
    store.update_job(job.id, [{"guest": "b1", "result": "starting", "seconds": 1, "detail": ""}])
    store.update_job(job.id, [{"guest": "b2", "result": "started", "seconds": 2, "detail": ""}])
    assert store.pending_jobs("host-b") == []
    assert store.release_steps("host-b") == [(job.id, "b1")]  # b2 is done
    assert store.pending_jobs("host-b") == [job.id]
    assert store.claim_steps(job.id, "host-b") == ["b1"]
    assert store.release_steps("host-c") == []
    store.update_job(job.id, [], state="failed", detail="x")
    assert store.release_steps("host-b") == []  # an ended job's steps stay as they are
