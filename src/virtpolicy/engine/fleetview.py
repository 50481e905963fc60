"""The fleet as the store shows it: hosts with their state and guest counts, and
every guest's status as its host's daemon last published it.

Read by ``virtpolicy hosts`` (in-process or through any daemon's
``GET /v1/hosts``); a host whose heartbeat is older than three of its
intervals is ``lost``, computed here from the reader's clock.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from virtpolicy.store.base import PolicyStore


def hosts(store: PolicyStore, now: float | None = None) -> list[dict[str, Any]]:
    """One object per host: ``name``, ``state`` (up, lost, left), ``uri``,
    ``guests`` and ``running`` (as it last published), ``heartbeat`` (ISO 8601
    UTC) and its age in seconds."""
    now = time.time() if now is None else now
    guests: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for g in store.guest_states():
        guests[g.host] += 1
        running[g.host] += g.running
    return [
        {
            "name": h.name,
            "state": h.shown_state(now),
            "uri": h.uri,
            "guests": guests[h.name],
            "running": running[h.name],
            "heartbeat": datetime.fromtimestamp(h.heartbeat_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            "heartbeat_age_s": round(max(0.0, now - h.heartbeat_at), 1),
        }
        for h in store.hosts()
    ]


def statuses(
    store: PolicyStore,
    host: str | None = None,
    *,
    besides: str | None = None,
    guest: str | None = None,
) -> list[dict[str, Any]]:
    """Each guest's status as its host last published it, with a ``host`` key (the
    state ``unknown`` when that host is lost); of ``host`` only if given, and not
    of ``besides`` (the asking daemon's own, which it has fresher). Sorted by
    guest, then host."""
    now = time.time()
    lost = {h.name for h in store.hosts() if h.shown_state(now) != "up"}
    return [
        # A lost host's guests: what they last were is no longer known.
        {**g.status, "host": g.host, **({"state": "unknown"} if g.host in lost else {})}
        for g in store.guest_states(host, guest=guest, statuses=True)
        if g.status is not None and g.host != besides
    ]


def fleet_statuses(store: PolicyStore, host: str | None = None) -> list[dict[str, Any]]:
    """:func:`statuses` of every host, and a row on no host (``host`` None, state
    ``undefined``) for each guest with a policy that no host has published."""
    rows = statuses(store, host)
    if host is None:
        seen = {r["guest"] for r in rows}
        rows += [
            {
                "guest": s.policy.guest,
                "host": None,
                "state": "undefined",
                "policy_revision": s.revision,
            }
            for s in store.list_policies()
            if s.policy.guest not in seen
        ]
    return sorted(rows, key=lambda r: (r["guest"], r["host"] or ""))
