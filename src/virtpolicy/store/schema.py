"""The tables of the policy store (SQLAlchemy Core; SQLite and PostgreSQL).

- ``store_state``: one row, the global revision counter. Every write
  transaction increments it first, which also serializes writers (a row lock
  on PostgreSQL, the write lock on SQLite), so a reader that remembers the
  counter notices any change by any process with one cheap query.
- ``policies``: the current policy of each guest, as canonical JSON, with its
  per-guest revision number. ``doc`` is NULL once deleted, so that revision
  numbers of a guest keep counting up if it is created again.
- ``revisions``: every version ever written, numbered per guest and
  globally (``seq``, the value the counter had after the write).
- ``tokens``: API bearer tokens, by name, with a role; only a SHA-256 of
  each token is kept (tokens are 256 random bits, so a fast hash is enough).
- ``jobs``: orchestrated starts and stops, who runs them (daemon or CLI,
  host and process) and each guest's result, kept current while they run, so
  that a job whose process died still says how far it got.
- ``job_steps``: one row per guest of a job, naming the host whose daemon
  starts or stops it (the guest's host when the job was recorded). Each
  daemon claims its own host's steps (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), so that no guest's step runs twice, and writes its results
  there; the jobs' ``results`` column is no longer written.
- ``dependencies`` and ``labels``: derived from ``policies`` and rewritten
  with it, so that plans and label selections need no JSON decoding.
- ``hosts``: each daemon sharing the store (a fleet): its libvirt URI, CPUs
  and topology summary, version, and heartbeat; ``state`` is ``up`` or
  ``left`` (a clean stop), and a host whose heartbeat is older than three
  of its intervals is shown ``lost``.
- ``guest_states``: the guests each host's daemon sees (state, UUID, which
  readiness conditions hold, and for a guest with a policy its status:
  desired vs actual, drift, problems), written when they change, so that
  every daemon and CLI sees the whole fleet.

Timestamps are ISO 8601 UTC strings, the same on every backend, except the
heartbeats and guest states, which are Unix times of the database's clock
(PostgreSQL's ``clock_timestamp()``): readers measure their own clock against
it at each read, so a host whose clock is off is neither shown lost nor left
out of incremental reads. Each host's offset is kept beside its heartbeat.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: The Alembic revision this code expects; a test checks it is the head.
SCHEMA_REVISION = "0009"
#: The rows a store holds at :data:`SCHEMA_REVISION` before anything is written
#: (what the migrations insert): a new store is made from these tables and rows
#: (see ``migrate``); a test checks that they are what the migrations make.
FIRST_ROWS: dict[str, list[dict[str, object]]] = {
    "store_state": [{"id": 1, "revision": 0}],
    "schema_compat": [{"id": 1, "readers_from": "0007", "needs_version": "0.1.0"}],
}

metadata = MetaData()

#: One row: the oldest schema revision a virtpolicy must know to use the store,
#: and the release that brought it (see migration 0007).
schema_compat = Table(
    "schema_compat",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("readers_from", String(32), nullable=False),
    Column("needs_version", String(32), nullable=False),
)

store_state = Table(
    "store_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("guest", String(255), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("doc", Text, nullable=True),
    Column("updated_at", String(32), nullable=False),
    Column("updated_by", String(255), nullable=False),
)

revisions = Table(
    "revisions",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("guest", String(255), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("doc", Text, nullable=True),
    UniqueConstraint("guest", "revision", name="uq_revisions_guest_revision"),
)

dependencies = Table(
    "dependencies",
    metadata,
    Column("guest", String(255), primary_key=True),
    Column("target", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
)

labels = Table(
    "labels",
    metadata,
    Column("guest", String(255), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", String(255), nullable=False),
    Index("ix_labels_key_value", "key", "value"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(255), nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("action", String(16), nullable=False),
    Column("request", Text, nullable=False),
    Column("guests", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("runner", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("process", String(64), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32), nullable=True),
    Column("results", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_jobs_state", "state"),
)

job_steps = Table(
    "job_steps",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("guest", String(255), primary_key=True),
    Column("host", String(255), nullable=False),  # whose daemon runs this step
    Column("state", String(8), nullable=False),  # pending | claimed | done
    Column("result", String(64), nullable=False),  # "" until the guest moved
    Column("seconds", Float, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_job_steps_host_state", "host", "state"),
)

hosts = Table(
    "hosts",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("uri", String(1024), nullable=False),
    Column("cpus", Integer, nullable=False),
    Column("topology", Text, nullable=False),  # JSON: nodes, sockets, cores, threads
    Column("version", String(32), nullable=False),
    Column("state", String(8), nullable=False),  # up | left
    Column("heartbeat_s", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),  # the database's clock
    Column("started_at", String(32), nullable=False),
    #: The host's clock less the database's, at its last heartbeat.
    Column("clock_offset_s", Float, nullable=False, server_default="0"),
    #: JSON: the host's memory at its last heartbeat (total_kib, available_kib,
    #: stall_percent), or "" before its daemon first sampled it.
    Column("memory", Text, nullable=False, server_default=""),
    #: JSON: where its placer put its guests (``GET /v1/placement``), written
    #: with a heartbeat when it changed; "" before.
    Column("placement", Text, nullable=False, server_default=""),
    #: JSON: how other hosts migrate guests here (``uri``, ``stream``), written
    #: when its daemon registers; "" from a daemon before 0009.
    Column("migration", Text, nullable=False, server_default=""),
)

guest_states = Table(
    "guest_states",
    metadata,
    Column("guest", String(255), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column("uuid", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    Column("ready", Text, nullable=False),  # JSON: condition -> holds
    Column("status", Text, nullable=False),  # JSON: its status (with a policy), or ""
    Column("updated_at", Float, nullable=False),
    Index("ix_guest_states_host", "host"),
)
