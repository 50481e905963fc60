"""The fleet in the store's database: hosts, their heartbeats, and their guests.

Each daemon writes only its own rows (its host row, its guests' states), so
these writes take no store-wide lock: heartbeats of fifty hosts never queue
behind each other or behind a policy write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.engine import URL

from virtpolicy.store.base import GuestState, HostRecord
from virtpolicy.store.schema import guest_states, hosts
from virtpolicy.store.sqlengine import chunks, write_transaction


class Fleet:
    """Host and guest-state records of a :class:`~virtpolicy.store.sql.SqlStore`."""

    url: URL
    engine: Engine
    _sqlite: bool

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _own_write(self) -> AbstractContextManager[Connection]:
        """A transaction for rows of this host's own (no store-wide lock)."""
        return write_transaction(self.engine, self.url, self._sqlite)

    def register_host(self, host: HostRecord) -> None:
        row = {
            "uri": host.uri,
            "cpus": host.cpus,
            "topology": json.dumps(dict(host.topology), sort_keys=True),
            "version": host.version,
            "state": "up",
            "heartbeat_s": host.heartbeat_s,
            "heartbeat_at": host.heartbeat_at,
            "started_at": host.started_at,
        }
        with self._own_write() as conn:
            done = conn.execute(update(hosts).where(hosts.c.name == host.name).values(**row))
            if done.rowcount == 0:
                conn.execute(insert(hosts).values(name=host.name, **row))

    def heartbeat(self, name: str, at: float) -> None:
        with self._own_write() as conn:
            conn.execute(
                update(hosts).where(hosts.c.name == name).values(heartbeat_at=at, state="up")
            )

    def leave_host(self, name: str) -> None:
        with self._own_write() as conn:
            conn.execute(update(hosts).where(hosts.c.name == name).values(state="left"))
            conn.execute(delete(guest_states).where(guest_states.c.host == name))

    def hosts(self) -> list[HostRecord]:
        with self._read() as conn:
            rows = conn.execute(select(hosts).order_by(hosts.c.name)).all()
        return [
            HostRecord(
                r.name,
                r.uri,
                r.cpus,
                json.loads(r.topology),
                r.version,
                r.state,
                r.heartbeat_s,
                r.heartbeat_at,
                r.started_at,
            )
            for r in rows
        ]

    def publish_guests(self, host: str, seen: Sequence[GuestState], gone: Sequence[str]) -> None:
        with self._own_write() as conn:
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
                            "updated_at": g.updated_at,
                            "status": json.dumps(g.status) if g.status is not None else "",
                        }
                        for g in seen
                    ],
                )

    def guest_keys(self) -> set[tuple[str, str]]:
        with self._read() as conn:
            rows = conn.execute(select(guest_states.c.guest, guest_states.c.host)).all()
        return {(r.guest, r.host) for r in rows}

    def guest_states(
        self,
        host: str | None = None,
        since: float | None = None,
        *,
        guest: str | None = None,
        statuses: bool = False,
    ) -> list[GuestState]:
        columns = [c for c in guest_states.c if statuses or c.name != "status"]
        query = select(*columns).order_by(guest_states.c.guest, guest_states.c.host)
        if host is not None:
            query = query.where(guest_states.c.host == host)
        if guest is not None:
            query = query.where(guest_states.c.guest == guest)
        if since is not None:
            query = query.where(guest_states.c.updated_at >= since)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            GuestState(
                r.guest,
                r.host,
                r.uuid,
                r.state,
                json.loads(r.ready),
                r.updated_at,
                json.loads(r.status) if statuses and r.status else None,
            )
            for r in rows
        ]
