"""What a policy store offers, independent of the database behind it.

The engine and the interfaces program against :class:`PolicyStore`; the SQL
implementation fills it for SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from virtpolicy.policy.graph import Edges
from virtpolicy.policy.model import GuestPolicy

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """A guest's current policy with its revision number and last writer."""

    policy: GuestPolicy
    revision: int
    updated_at: str
    updated_by: str


@dataclass(frozen=True, slots=True)
class Revision:
    """One version of a guest's policy. ``policy`` is None for a delete."""

    seq: int
    guest: str
    revision: int
    action: Action
    actor: str
    created_at: str
    policy: GuestPolicy | None


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``policy``; if ``expect`` is set, only if the guest is at that revision.

    Revision 0 means "has never had a policy".
    """

    policy: GuestPolicy
    expect: int | None = None

    @property
    def guest(self) -> str:
        return self.policy.guest


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``guest``'s policy, with the same optional revision check."""

    guest: str
    expect: int | None = None


Change = Put | Delete


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write did to one guest: a new revision, or ``unchanged``."""

    guest: str
    action: Action | Literal["unchanged"]
    revision: int
    before: GuestPolicy | None
    after: GuestPolicy | None


Role = Literal["reader", "operator", "admin"]


@dataclass(frozen=True, slots=True)
class Token:
    """An API token's record; the secret itself is never stored."""

    name: str
    role: Role
    created_at: str
    created_by: str


class PolicyStore(Protocol):
    """Persistence of policies and their revisions."""

    def global_revision(self) -> int:
        """A number that grows with every write to any guest."""

    def get(self, guest: str) -> StoredPolicy:
        """The current policy of ``guest``; NotFoundError if it has none."""

    def list_policies(self, labels: Mapping[str, str] | None = None) -> list[StoredPolicy]:
        """Current policies, by guest name, having all of ``labels``."""

    def guests(self) -> list[str]:
        """Names of the guests that have a policy, sorted."""

    def edges(self) -> dict[str, list[tuple[str, str]]]:
        """The dependency graph of all current policies."""

    def history(self, guest: str) -> list[Revision]:
        """Every revision of ``guest``, oldest first; NotFoundError if none."""

    def revision(self, guest: str, number: int) -> Revision:
        """One revision of ``guest``; NotFoundError if it does not exist."""

    def write(
        self, changes: Sequence[Change], actor: str, *, dry_run: bool = False
    ) -> list[Outcome]:
        """Apply ``changes`` all together or not at all.

        Checks every revision expectation (ConflictError) and that the
        resulting graph has no cycle (CycleError) before writing anything.
        With ``dry_run``, reports the outcomes and writes nothing.
        """

    def add_token(self, name: str, role: Role, digest: str, actor: str) -> Token:
        """Record a token by the SHA-256 ``digest`` of its secret; ConflictError if taken."""

    def token_by_digest(self, digest: str) -> Token | None:
        """The token whose secret has this SHA-256 digest, if any."""

    def tokens(self) -> list[Token]:
        """Every token, by name."""

    def delete_token(self, name: str) -> None:
        """Forget a token; NotFoundError if there is none of that name."""

    def close(self) -> None:
        """Release connections."""


__all__ = [
    "Change",
    "Delete",
    "Edges",
    "Outcome",
    "PolicyStore",
    "Put",
    "Revision",
    "Role",
    "StoredPolicy",
    "Token",
]
