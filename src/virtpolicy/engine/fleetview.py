"""The fleet as the store shows it: hosts with their state and guest counts.

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
