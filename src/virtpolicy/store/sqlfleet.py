"""The fleet in the store's database: hosts, their heartbeats, and their guests.

Each daemon writes only its own rows (its host row, its guests' states), so
these writes take no store-wide lock: heartbeats of fifty hosts never queue
behind each other or behind a policy write.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.engine import URL

from virtpolicy.store.base import GuestState, HostRecord
from virtpolicy.store.schema import guest_states, hosts, job_steps, jobs
from virtpolicy.store.sqlengine import chunks, write_transaction


class Fleet:
    """Host and guest-state records of a :class:`~virtpolicy.store.sql.SqlStore`."""

    url: URL
    engine: Engine
    _sqlite: bool
    _postgres: bool

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _own_write(self) -> AbstractContextManager[Connection]:
        """A transaction for rows of this host's own (no store-wide lock)."""
        return write_transaction(self.engine, self.url, self._sqlite)

    # -- the database's clock ------------------------------------------------------

    def _clock(self, conn: Connection) -> tuple[float, float]:
        """(The database's time, its offset from this process's clock): what
        stamps heartbeats and guest states, and what a reader adds to its own
        clock to compare. SQLite is on this machine: its clock is this one."""
        if not self._postgres:
            return time.time(), 0.0
        before = time.time()
        db_now = float(
            conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one()
        )
        return db_now, db_now - (before + time.time()) / 2

    def register_host(self, host: HostRecord) -> None:
        with self._own_write() as conn:
            db_now, offset = self._clock(conn)
            row = {
                "uri": host.uri,
                "cpus": host.cpus,
                "topology": json.dumps(dict(host.topology), sort_keys=True),
                "version": host.version,
                "state": "up",
                "heartbeat_s": host.heartbeat_s,
                "heartbeat_at": db_now,
                "started_at": host.started_at,
                "clock_offset_s": -offset,
                "migration": json.dumps(dict(host.migration), sort_keys=True)
                if host.migration
                else "",
            }
            done = conn.execute(update(hosts).where(hosts.c.name == host.name).values(**row))
            if done.rowcount == 0:
                conn.execute(insert(hosts).values(name=host.name, **row))

    def heartbeat(
        self,
        name: str,
        memory: Mapping[str, float | None] | None = None,
        placement: Mapping[str, Any] | None = None,
    ) -> None:
        values: dict[str, object] = {"state": "up"}
        if memory is not None:
            values["memory"] = json.dumps(_host_memory(memory), sort_keys=True)
        if placement is not None:
            values["placement"] = json.dumps(placement, sort_keys=True)
        with self._own_write() as conn:
            db_now, offset = self._clock(conn)
            conn.execute(
                update(hosts)
                .where(hosts.c.name == name)
                .values(heartbeat_at=db_now, clock_offset_s=-offset, **values)
            )

    def release_steps(self, host: str) -> list[tuple[int, str]]:
        left = and_(
            job_steps.c.host == host,
            job_steps.c.state == "claimed",
            job_steps.c.job_id.in_(select(jobs.c.id).where(jobs.c.state == "running")),
        )
        with self._own_write() as conn:
            found = conn.execute(select(job_steps.c.job_id, job_steps.c.guest).where(left)).all()
            if found:
                conn.execute(update(job_steps).where(left).values(state="pending"))
        return sorted((int(r.job_id), str(r.guest)) for r in found)

    def leave_host(self, name: str) -> None:
        with self._own_write() as conn:
            conn.execute(update(hosts).where(hosts.c.name == name).values(state="left"))
            conn.execute(delete(guest_states).where(guest_states.c.host == name))

    def hosts(self) -> list[HostRecord]:
        with self._read() as conn:
            rows = conn.execute(select(hosts).order_by(hosts.c.name)).all()
            _, offset = self._clock(conn)
        return [
            HostRecord(
                r.name,
                r.uri,
                r.cpus,
                json.loads(r.topology),
                r.version,
                r.state,
                r.heartbeat_s,
                r.heartbeat_at - offset,
                r.started_at,
                r.clock_offset_s,
                _read_memory(r.memory),
                _json_object(r.placement),
                _read_migration(r.migration),
            )
            for r in rows
        ]

    def publish_guests(self, host: str, seen: Sequence[GuestState], gone: Sequence[str]) -> None:
        with self._own_write() as conn:
            db_now, _ = self._clock(conn)
            names = [g.guest for g in seen] + list(gone)
            for chunk in chunks(names):
                conn.execute(
                    delete(guest_states).where(
                        guest_states.c.host == host, guest_states.c.guest.in_(chunk)
                    )
                )
            if seen:
                conn.execute(
                    insert(guest_states),
                    [
                        {
                            "guest": g.guest,
                            "host": host,
                            "uuid": g.uuid,
                            "state": g.state,
                            "ready": json.dumps(dict(g.ready), sort_keys=True),
                            "updated_at": db_now,
                            "status": json.dumps(g.status) if g.status is not None else "",
                        }
                        for g in seen
                    ],
                )

    def guest_keys(
        self, since: float | None = None, *, other_than: str | None = None
    ) -> set[tuple[str, str]]:
        query = select(guest_states.c.guest, guest_states.c.host)
        if other_than is not None:
            query = query.where(guest_states.c.host != other_than)
        with self._read() as conn:
            if since is not None:
                _, offset = self._clock(conn)
                query = query.where(guest_states.c.updated_at >= since + offset)
            return {(guest, host) for guest, host in conn.execute(query)}

    def guest_states(
        self,
        host: str | None = None,
        since: float | None = None,
        *,
        guest: str | None = None,
        statuses: bool = False,
        guests: Collection[str] | None = None,
        other_than: str | None = None,
    ) -> list[GuestState]:
        columns = [c for c in guest_states.c if statuses or c.name != "status"]
        query = select(*columns).order_by(guest_states.c.guest, guest_states.c.host)
        if host is not None:
            query = query.where(guest_states.c.host == host)
        if other_than is not None:
            query = query.where(guest_states.c.host != other_than)
        if guest is not None:
            query = query.where(guest_states.c.guest == guest)
        with self._read() as conn:
            _, offset = self._clock(conn)
            if since is not None:
                query = query.where(guest_states.c.updated_at >= since + offset)
            if guests is None:
                rows = conn.execute(query).all()
            else:
                rows = [
                    row
                    for chunk in chunks(sorted(guests))
                    for row in conn.execute(query.where(guest_states.c.guest.in_(chunk))).all()
                ]
        return [
            GuestState(
                r.guest,
                r.host,
                r.uuid,
                r.state,
                json.loads(r.ready),
                r.updated_at - offset,
                json.loads(r.status) if statuses and r.status else None,
            )
            for r in rows
        ]


_MEMORY_KEYS = ("total_kib", "available_kib", "stall_percent")


def _host_memory(memory: Mapping[str, object]) -> dict[str, float | None]:
    """A host's memory as stored: each known key, a finite number or None."""
    found = {k: memory.get(k) for k in _MEMORY_KEYS}
    return {
        k: float(v)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else None
        for k, v in found.items()
    }


def _read_memory(text: str | None) -> dict[str, float | None] | None:
    """A host's memory as read back; None when not recorded."""
    found = _json_object(text)
    return _host_memory(found) if found is not None else None


def _read_migration(text: str | None) -> dict[str, str | None] | None:
    """How other hosts migrate guests to a host, as read back: a ``uri`` (text),
    and a ``stream`` (text or None); None when not recorded or not so shaped."""
    found = _json_object(text)
    if found is None or not isinstance(found.get("uri"), str):
        return None
    stream = found.get("stream")
    return {"uri": found["uri"], "stream": stream if isinstance(stream, str) else None}


def _json_object(text: str | None) -> dict[str, Any] | None:
    """A JSON object a host's row holds; None when empty, or not one (a row
    written by hand is shown as unknown, never a failed read)."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
