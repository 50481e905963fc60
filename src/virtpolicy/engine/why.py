"""Why a guest is not as its policy says, in one line, by severity.

The page asks the same question of every guest, wherever it shows one (the
fleet's rows, the guest's page, the graph's nodes): what is wrong with it,
first? A guest's status holds the parts (its problems, its error, its
drift, its state); what holds it back comes from the graph. :func:`reasons`
puts them in one order, so that every view shows the same first reason:

1. ``error``: the store is out of reach, the guest's host is lost, its
   policy is not enforced;
2. ``warning``: held back by a guest it requires, placement refused, running
   with nothing pinned for it, another problem of its policy;
3. ``info``: drift found, being put back;
4. ``notice``: what the driver cannot do (the test driver has no scheduler
   parameters), which no one can fix from the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtpolicy.policy.placement import PLACEMENT_REFUSED

#: Most severe first.
SEVERITIES = ("error", "warning", "info", "notice")
#: The problem a dedicated guest without a place has.
NOT_PLACED = "nothing is pinned for it"
#: The problem every row of a host whose daemon cannot reach the store has.
STORE_UNREACHABLE = "store: unreachable"


def reasons(row: Mapping[str, Any], *, blocked: str | None = None) -> list[dict[str, str]]:
    """Each reason ``row`` (a guest's status, as ``/v1/status`` gives it) is not
    as its policy says, most severe first: ``{"severity", "kind", "text"}``;
    ``blocked``: the chain that holds it back (it is down, and so is a guest it
    requires), from the graph."""
    found: list[tuple[str, str, str]] = []
    state = row.get("state")
    if state == "unknown":
        found.append(("error", "host lost", f"its host {row.get('host')} is lost: state unknown"))
    if row.get("error"):
        found.append(("error", "not enforced", str(row["error"])))
    for problem in row.get("problems") or ():
        text = str(problem)
        if text.startswith(STORE_UNREACHABLE):
            found.append(("error", "store unreachable", text))
        elif "not supported by" in text:
            found.append(("notice", "driver", text))
        elif text.startswith(PLACEMENT_REFUSED):
            found.append(("warning", "placement refused", text))
        elif NOT_PLACED in text and state == "running":
            found.append(("warning", "running unpinned", text))
        else:
            found.append(("warning", "problem", text))
    if blocked and state != "running":
        found.append(("warning", "held back", f"held back: {blocked}"))
    drift = row.get("drift") or {}
    if drift:
        found.append(("info", "drift", f"drift being put back: {', '.join(sorted(drift))}"))
    found.sort(key=lambda r: SEVERITIES.index(r[0]))  # stable: the order above within one
    return [{"severity": s, "kind": k, "text": t} for s, k, t in found]
