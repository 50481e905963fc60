"""Start and stop plans from the stored dependency graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from virtpolicy.policy.graph import Waves, start_waves, stop_waves
from virtpolicy.store.base import Policies

Operation = Literal["start", "stop"]


def plan(store: Policies, operation: Operation, guests: Sequence[str] | None) -> Waves:
    """Waves for ``operation`` on ``guests`` (None: every guest in the graph).

    The graph is checked for cycles again here: a store written by an older
    version, or by hand, may hold one.
    """
    edges = store.edges()
    if operation == "start":
        return start_waves(edges, guests)
    return stop_waves(edges, guests)
