"""Persistence of policies, their revisions, tokens and jobs.

The SQL implementation (and SQLAlchemy with it) is imported on first use, so
that a command talking to the daemon never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtpolicy.store.base import (
    Change,
    Delete,
    Outcome,
    PolicyStore,
    Put,
    Revision,
    StoredPolicy,
)

if TYPE_CHECKING:
    from virtpolicy.store.sql import SqlStore


def open_store(db: str) -> PolicyStore:
    """Open (creating and migrating as needed) the store at ``db``: URL or path."""
    from virtpolicy.store.sql import SqlStore  # noqa: PLC0415  (see the module docstring)

    return SqlStore(db)


def masked_db(db: str) -> str:
    """``db`` as shown in logs and status: a URL's password hidden."""
    if "://" not in db:
        return db
    from virtpolicy.store.sqlengine import masked, to_url  # noqa: PLC0415

    return masked(to_url(db))


def __getattr__(name: str) -> Any:
    if name == "SqlStore":
        from virtpolicy.store.sql import SqlStore  # noqa: PLC0415

        return SqlStore
    raise AttributeError(name)


__all__ = [
    "Change",
    "Delete",
    "Outcome",
    "PolicyStore",
    "Put",
    "Revision",
    "SqlStore",
    "StoredPolicy",
    "masked_db",
    "open_store",
]
