"""Persistence of policies, their revisions and (later) guest state."""

from virtpolicy.store.base import (
    Change,
    Delete,
    Outcome,
    PolicyStore,
    Put,
    Revision,
    StoredPolicy,
)
from virtpolicy.store.sql import SqlStore


def open_store(db: str) -> PolicyStore:
    """Open (creating and migrating as needed) the store at ``db``: URL or path."""
    return SqlStore(db)


__all__ = [
    "Change",
    "Delete",
    "Outcome",
    "PolicyStore",
    "Put",
    "Revision",
    "SqlStore",
    "StoredPolicy",
    "open_store",
]
