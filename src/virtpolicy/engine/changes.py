"""Changing the desired state: set, delete and declarative apply.

Each function validates the whole request before the store writes anything,
and the store writes all of it in one transaction or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtpolicy.errors import ForbiddenError
from virtpolicy.policy.diff import field_changes, summarize, unified_diff
from virtpolicy.policy.edit import merged_policy
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import Change, Delete, Outcome, PolicyStore, Put, Revision, Vet


def set_policy(
    store: PolicyStore,
    guest: str,
    patch: Mapping[str, Any],
    *,
    actor: str,
    expect: int | None = None,
    may_exec: bool = True,
) -> Outcome:
    """Change only the fields in ``patch`` (a merge patch, see ``policy.edit``).

    The read-modify-write is guarded: if someone else writes the guest between
    our read and our write, the write fails with ConflictError instead of
    silently dropping their change. A guest with no policy is guarded too, at
    the revision it has (0 if it never had one, else that of its deletion), so
    two writers creating it at once cannot both succeed.
    """
    revision, before = store.head(guest)  # one read: the two cannot disagree
    after = merged_policy(before, guest, patch)
    guard = expect if expect is not None else revision
    [outcome] = store.write([Put(after, guard)], actor, vet=_vet(may_exec))
    return outcome


def put_policy(
    store: PolicyStore,
    policy: GuestPolicy,
    *,
    actor: str,
    expect: int | None = None,
    may_exec: bool = True,
) -> Outcome:
    """Create or replace a guest's whole policy."""
    [outcome] = store.write([Put(policy, expect)], actor, vet=_vet(may_exec))
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
    may_exec: bool = True,
) -> list[Outcome]:
    """Make the store hold exactly ``policies`` (and, with ``prune``, no others).

    Idempotent: applying the same policies again changes nothing and makes no
    revision.
    """
    changes: list[Change] = [Put(p) for p in policies]
    if prune:
        wanted = {p.guest for p in policies}
        changes += [Delete(g) for g in sorted(store.guests()) if g not in wanted]
    return store.write(changes, actor, dry_run=dry_run, vet=_vet(may_exec))


def _vet(may_exec: bool) -> Vet | None:
    """Without ``may_exec`` (an API caller below admin), refuse a write that adds or
    changes an ``exec:`` condition: the daemon runs those commands, so writing one
    is an admin's power. Keeping one that is there already is allowed."""
    if may_exec:
        return None

    def vet(outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            added = _exec_conditions(o.after) - _exec_conditions(o.before)
            if added:
                kind, dep, when = sorted(added)[0]
                raise ForbiddenError(
                    f'{o.guest}: {kind}.{dep}.when: "{when}": only an admin may write an '
                    "exec: condition",
                    field=f"{kind}.{dep}.when",
                )

    return vet


def _exec_conditions(policy: GuestPolicy | None) -> set[tuple[str, str, str]]:
    if policy is None:
        return set()
    return {
        (kind, d.guest, d.when)
        for kind, deps in (("requires", policy.requires), ("wants", policy.wants))
        for d in deps
        if d.when.startswith("exec:")
    }


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
