"""Stored rows into policies and revisions, and the check that what is written
reads back as what was accepted: one place for the store's decoding, so that a
document that no longer validates is told apart (a broken policy) the same way
wherever it is read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from virtpolicy.errors import BrokenPolicyError, PolicyError, StoreError
from virtpolicy.policy.model import GuestPolicy, describe_validation_error
from virtpolicy.store.base import BrokenPolicy, Revision, StoredPolicy, Wanted


def fault(doc: str) -> str | None:
    """Why a stored document does not validate, in one line; None if it does."""
    try:
        GuestPolicy.model_validate_json(doc)
    except ValidationError as exc:
        return str(describe_validation_error(exc))
    except ValueError as exc:  # PolicyError raised outside pydantic's wrapping
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def decode(guest: str, revision: int, doc: str) -> GuestPolicy:
    try:
        return GuestPolicy.model_validate_json(doc)
    except ValueError:
        raise BrokenPolicyError(guest, revision, fault(doc) or "it does not validate") from None


def loaded(guest: str, revision: int, doc: str | None) -> GuestPolicy | None:
    """The stored policy, or None when there is none or it no longer loads."""
    if doc is None:
        return None
    try:
        return decode(guest, revision, doc)
    except BrokenPolicyError:
        return None


def check_reads_back(policy: GuestPolicy) -> None:
    """What is stored must read back as exactly what was accepted: a policy whose
    text validates as something else (or not at all) is refused, not written."""
    text = policy.canonical_json()
    try:
        again = GuestPolicy.model_validate_json(text)
    except ValueError:
        again = None
    if again != policy:
        raise PolicyError(
            f"{policy.guest}: the policy would not read back as written "
            f"({fault(text) or 'it reads back as another policy'}); nothing was written",
            field="guest",
        )


def stored(row: Any) -> StoredPolicy:
    return StoredPolicy(
        decode(row.guest, row.revision, row.doc), row.revision, row.updated_at, row.updated_by
    )


#: A revision's fields as a notification carries them (see store.feed.payload).
ROW = ("seq", "guest", "revision", "action", "actor", "created_at", "doc")


def carried(row: Sequence[Any], wanted: Wanted | None = None) -> Revision:
    """A revision from a notification's row; StoreError if it is not one."""
    if len(row) != len(ROW):
        raise StoreError(f"a notification's revision has {len(row)} fields, not {len(ROW)}")
    return revision_of(SimpleNamespace(**dict(zip(ROW, row, strict=True))), wanted)


def revision_of(row: Any, wanted: Wanted | None = None) -> Revision:
    """A revision row as read; not decoded when its guest is not ``wanted``."""
    if wanted is not None and not wanted(row.guest):
        return Revision(
            row.seq, row.guest, row.revision, row.action, row.actor, row.created_at, None,
            decoded=False,
        )  # fmt: skip
    policy = loaded(row.guest, row.revision, row.doc)
    broken = (fault(row.doc) or "") if policy is None and row.doc is not None else ""
    return Revision(
        row.seq, row.guest, row.revision, row.action, row.actor, row.created_at, policy, broken
    )


def current_rows(
    rows: Sequence[Any], wanted: Wanted | None, known: Mapping[str, StoredPolicy] | None
) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
    """Current policy rows as policies, and those that no longer load: rows of
    guests not ``wanted`` left out, one at the revision of a ``known`` policy
    given back as that (not decoded again)."""
    found, broken = [], []
    for row in rows:
        if wanted is not None and not wanted(row.guest):
            continue
        held = known.get(row.guest) if known is not None else None
        if held is not None and held.revision == row.revision:
            found.append(held)
            continue
        try:
            found.append(stored(row))
        except BrokenPolicyError as exc:
            broken.append(
                BrokenPolicy(row.guest, row.revision, row.updated_at, row.updated_by, exc.reason)
            )
    return found, broken
