"""Changing the desired state: set, delete and declarative apply.

Each function validates the whole request before the store writes anything,
and the store writes all of it in one transaction or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtpolicy.errors import NotFoundError
from virtpolicy.policy.diff import field_changes, summarize, unified_diff
from virtpolicy.policy.edit import patch_policy
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import Change, Delete, Outcome, PolicyStore, Put, Revision


def set_policy(
    store: PolicyStore,
    guest: str,
    patch: Mapping[str, Any],
    *,
    actor: str,
    expect: int | None = None,
) -> Outcome:
    """Change only the fields in ``patch`` (a merge patch, see ``policy.edit``).

    The read-modify-write is guarded: if someone else writes the guest between
    our read and our write, the write fails with ConflictError instead of
    silently dropping their change.
    """
    try:
        current = store.get(guest)
    except NotFoundError:
        before, revision = None, None
    else:
        before, revision = current.policy, current.revision
    after = patch_policy(before, guest, patch)
    guard = expect if expect is not None else revision
    [outcome] = store.write([Put(after, guard)], actor)
    return outcome


def delete_policy(
    store: PolicyStore, guest: str, *, actor: str, expect: int | None = None
) -> Outcome:
    """Delete ``guest``'s policy (a revision too: history keeps it)."""
    [outcome] = store.write([Delete(guest, expect)], actor)
    return outcome


def apply_policies(
    store: PolicyStore,
    policies: Sequence[GuestPolicy],
    *,
    actor: str,
    prune: bool = False,
    dry_run: bool = False,
) -> list[Outcome]:
    """Make the store hold exactly ``policies`` (and, with ``prune``, no others).

    Idempotent: applying the same policies again changes nothing and makes no
    revision.
    """
    changes: list[Change] = [Put(p) for p in policies]
    if prune:
        wanted = {p.guest for p in policies}
        changes += [Delete(g) for g in sorted(store.guests()) if g not in wanted]
    return store.write(changes, actor, dry_run=dry_run)


@dataclass(frozen=True, slots=True)
class Result:
    """What a write did to one guest, ready to show: the same locally and over the API."""

    guest: str
    action: str
    revision: int
    changes: list[str]
    diff: str | None = None


def outcome_result(o: Outcome, *, diff: bool = False) -> Result:
    """A store outcome as a :class:`Result` (with a unified diff if asked)."""
    text = None
    if diff and o.action != "unchanged":
        old = f"{o.guest}@{o.revision - 1}" if o.before else "/dev/null"
        new = f"{o.guest}@{o.revision}" if o.after else "/dev/null"
        text = unified_diff(o.before, o.after, old, new)
    return Result(
        o.guest, o.action, o.revision, [str(c) for c in field_changes(o.before, o.after)], text
    )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A revision and a one-line summary of what it changed."""

    revision: Revision
    change: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON for the API and ``history -o json``."""
        rev = self.revision
        return {
            "revision": rev.revision,
            "seq": rev.seq,
            "time": rev.created_at,
            "actor": rev.actor,
            "action": rev.action,
            "change": self.change,
            "policy": rev.policy.to_document() if rev.policy else None,
        }


def history(store: PolicyStore, guest: str) -> list[HistoryEntry]:
    """Every revision of ``guest`` with what changed from the one before."""
    entries: list[HistoryEntry] = []
    previous: GuestPolicy | None = None
    for rev in store.history(guest):
        entries.append(HistoryEntry(rev, summarize(previous, rev.policy)))
        previous = rev.policy
    return entries
