"""What a policy store offers, independent of the database behind it.

The engine and the interfaces program against :class:`PolicyStore`; the SQL
implementation fills it for SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from virtpolicy.policy.graph import Edges
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.jobrecords import Job, JobState, Step

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
    """One version of a guest's policy. ``policy`` is None for a delete, and for
    a stored document that no longer validates: then ``broken`` says why."""

    seq: int
    guest: str
    revision: int
    action: Action
    actor: str
    created_at: str
    policy: GuestPolicy | None
    broken: str = ""
    #: False: not decoded, the reader did not want this guest's (``policy`` is
    #: None whatever was written; see :data:`Wanted`).
    decoded: bool = True


@dataclass(frozen=True, slots=True)
class BrokenPolicy:
    """A guest's current policy as stored, when it no longer validates (written
    by an older version, or by hand): not enforced, shown, replaced or deleted."""

    guest: str
    revision: int
    updated_at: str
    updated_by: str
    reason: str


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
    """What a write did to one guest: a new revision, or ``unchanged``; once
    written, the revision as stored (``written``)."""

    guest: str
    action: Action | Literal["unchanged"]
    revision: int
    before: GuestPolicy | None
    after: GuestPolicy | None
    written: Revision | None = None


#: Checks a write's outcomes inside its transaction, before anything is written;
#: raises to refuse the whole write.
Vet = Callable[[Sequence[Outcome]], None]

Role = Literal["reader", "operator", "admin"]


@dataclass(frozen=True, slots=True)
class Token:
    """An API token's record; the secret itself is never stored."""

    name: str
    role: Role
    created_at: str
    created_by: str


#: A host is lost when its heartbeat is older than this many of its intervals.
LOST_AFTER_BEATS = 3


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A daemon sharing the store, as it registered and last beat."""

    name: str
    uri: str
    cpus: int
    topology: Mapping[str, int]
    version: str
    state: Literal["up", "left"]
    heartbeat_s: float
    #: Unix time, on the clock of whoever read the record (the store translates
    #: the database's clock, which stamps it).
    heartbeat_at: float
    started_at: str
    #: The host's own clock less the database's, at its last heartbeat.
    clock_offset_s: float = 0.0
    #: Its memory at its last heartbeat: ``total_kib``, ``available_kib`` and
    #: ``stall_percent`` (PSI some avg10; None where unknown). None: not known.
    memory: Mapping[str, float | None] | None = None
    #: Where its placer put its guests, as ``GET /v1/placement`` on its daemon
    #: gives it, as of the last heartbeat that changed it. None: not known.
    placement: Mapping[str, Any] | None = None
    #: How other hosts migrate guests here: ``uri`` (its libvirtd, peer to peer)
    #: and ``stream`` (QEMU's, None: libvirt's default). None: it takes none.
    migration: Mapping[str, str | None] | None = None

    def shown_state(self, now: float) -> Literal["up", "lost", "left"]:
        """``lost`` when up but silent for more than :data:`LOST_AFTER_BEATS` beats."""
        if self.state == "up" and now - self.heartbeat_at > LOST_AFTER_BEATS * self.heartbeat_s:
            return "lost"
        return self.state


@dataclass(frozen=True, slots=True)
class GuestState:
    """A guest as one host's daemon sees it: its state, and which readiness
    conditions (``when`` of a dependency, e.g. "agent") hold now."""

    guest: str
    host: str
    uuid: str
    state: str
    ready: Mapping[str, bool]
    updated_at: float  # Unix time, on the reader's clock (as heartbeat_at)
    #: Its status as the host's daemon last checked it (a guest with a policy).
    status: Mapping[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.state in ("running", "blocked", "paused", "pmsuspended")


#: Which guests' policies a reader decodes: a daemon in a fleet wants its own
#: guests' and a few more, and passes over the rest by name.
Wanted = Callable[[str], bool]


class ChangeFeed(Protocol):
    """How a daemon hears that the store changed (see :mod:`virtpolicy.store.feed`)."""

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block up to ``timeout`` s (less if ``stop`` is set); True when the store may
        have changed since the last call: a write seen, or an error (so that the
        caller reads and finds out)."""

    def written(self, wanted: Wanted | None = None) -> list[Revision] | None:
        """The revisions written since the last call, when the feed heard every
        one of them in full (PostgreSQL's notifications carry them); None when
        only the store can tell. Those of guests not ``wanted`` are not decoded."""

    @property
    def wakes_on_write(self) -> bool:
        """Whether a wait ends as soon as another process writes, so that a caller
        may wait long (:data:`~virtpolicy.store.feed.UNHEARD_S`)."""

    def interrupt(self) -> None:
        """From another thread: end a wait now (it returns False if ``stop`` is set)."""

    def close(self) -> None: ...


class Policies(Protocol):
    """The policies, their revisions and how a reader hears of writes."""

    def global_revision(self) -> int:
        """A number that grows with every write to any guest."""

    def change_feed(self) -> ChangeFeed:
        """A new way to hear of writes by any process (:mod:`virtpolicy.store.feed`)."""

    def get(self, guest: str) -> StoredPolicy:
        """The current policy of ``guest``; NotFoundError if it has none,
        BrokenPolicyError if it no longer validates."""

    def head(self, guest: str) -> tuple[int, GuestPolicy | None]:
        """The guest's current revision and policy, read together: after a delete the
        delete's revision and None; (0, None) if it never had a policy;
        BrokenPolicyError if it no longer validates."""

    def list_policies(self, labels: Mapping[str, str] | None = None) -> list[StoredPolicy]:
        """Current policies, by guest name, having all of ``labels``; those that no
        longer validate are left out (see :meth:`policies_and_broken`)."""

    def policies_and_broken(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        wanted: Wanted | None = None,
        guests: Collection[str] | None = None,
        known: Mapping[str, StoredPolicy] | None = None,
    ) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
        """:meth:`list_policies`, and the current policies (with all of ``labels``)
        that no longer validate, each by guest name: one read for both. Only
        those of ``guests`` when given; those not ``wanted`` are left out
        undecoded; one at the revision of a ``known`` one is given back as that,
        not decoded again."""

    def guests(self) -> list[str]:
        """Names of the guests that have a policy, sorted."""

    def edges(self) -> dict[str, list[tuple[str, str]]]:
        """The dependency graph of all current policies."""

    def history(self, guest: str) -> list[Revision]:
        """Every revision of ``guest``, oldest first; NotFoundError if none."""

    def revisions_since(
        self, seq: int, limit: int, *, wanted: Wanted | None = None
    ) -> list[Revision]:
        """Revisions of any guest written after global revision ``seq``, oldest
        first; those of guests not ``wanted`` undecoded."""

    def revision(self, guest: str, number: int) -> Revision:
        """One revision of ``guest``; NotFoundError if it does not exist."""

    def write(
        self,
        changes: Sequence[Change],
        actor: str,
        *,
        dry_run: bool = False,
        vet: Vet | None = None,
    ) -> list[Outcome]:
        """Apply ``changes`` all together or not at all.

        Checks every revision expectation (ConflictError), that the resulting
        graph has no cycle (CycleError) and ``vet`` (which sees each outcome's
        before and after) before writing anything. With ``dry_run``, reports
        the outcomes, writes nothing and takes no write lock.
        """


class Whereabouts(Protocol):
    """Where the fleet's guests are: the hosts, and the guests each one sees."""

    def hosts(self) -> list[HostRecord]:
        """Every host that ever registered, by name."""

    def guest_states(
        self,
        host: str | None = None,
        since: float | None = None,
        *,
        guest: str | None = None,
        statuses: bool = False,
        guests: Collection[str] | None = None,
        other_than: str | None = None,
    ) -> list[GuestState]:
        """The guests every host (or ``host``, or every host but ``other_than``)
        last published, by guest and host; with ``since``, only those written at
        or after that Unix time (the reader's clock); with ``guest`` or
        ``guests``, only their rows. Their statuses (JSON to decode) only when
        asked for."""


class FleetRecords(Whereabouts, Protocol):
    """The hosts of a fleet and the guests each one sees, as their daemons keep them."""

    def register_host(self, host: HostRecord) -> None:
        """Add or replace ``host`` (a daemon starting), state ``up``."""

    def heartbeat(
        self,
        name: str,
        memory: Mapping[str, float | None] | None = None,
        placement: Mapping[str, Any] | None = None,
    ) -> None:
        """The host is alive now (the database's clock), and how far this process's
        clock is from it (kept as the host's offset); its ``memory`` and
        ``placement`` when given (see :class:`HostRecord`)."""

    def release_steps(self, host: str) -> list[tuple[int, str]]:
        """(A daemon starting.) The steps of running jobs that ``host``'s daemon
        had claimed and not finished (a process that has since ended), made
        pending again, so that the new daemon takes them up; (job, guest) each."""

    def leave_host(self, name: str) -> None:
        """A clean stop: state ``left``, and its guests' states are dropped."""

    def publish_guests(self, host: str, seen: Sequence[GuestState], gone: Sequence[str]) -> None:
        """Write the states ``host`` sees now (upserted) and drop ``gone`` guests."""

    def guest_keys(
        self, since: float | None = None, *, other_than: str | None = None
    ) -> set[tuple[str, str]]:
        """(guest, host) of every published guest (with ``since``, of those written
        at or after it; with ``other_than``, on another host than that one):
        :meth:`guest_states` without anything to decode."""


class Tokens(Protocol):
    """API tokens, kept by the digest of their secret."""

    def add_token(self, name: str, role: Role, digest: str, actor: str) -> Token:
        """Record a token by the SHA-256 ``digest`` of its secret; ConflictError if taken."""

    def token_by_digest(self, digest: str) -> Token | None:
        """The token whose secret has this SHA-256 digest, if any."""

    def tokens(self) -> list[Token]:
        """Every token, by name."""

    def delete_token(self, name: str) -> None:
        """Forget a token; NotFoundError if there is none of that name."""


class Jobs(Protocol):
    """Start and stop jobs and each guest's step of them."""

    def add_job(
        self,
        action: str,
        request: Mapping[str, Any],
        guests: Sequence[str],
        *,
        runner: str,
        host: str,
        process: str,
        actor: str,
        hosts: Mapping[str, str] | None = None,
    ) -> Job:
        """Record a new job in state ``running``, a pending step per guest for the
        daemon of its host in ``hosts`` (``host`` for a guest not there)."""

    def claim_steps(self, job_id: int, host: str) -> list[str]:
        """Take up the pending steps of ``host``; the guests taken. A step is taken
        once, however many processes ask at the same time."""

    def pending_jobs(self, host: str) -> list[int]:
        """The running jobs with steps of ``host`` that no one took up yet."""

    def update_job(
        self,
        job_id: int,
        results: Sequence[Step],
        *,
        state: JobState = "running",
        detail: str = "",
    ) -> bool:
        """Record guests' progress (into their steps; a step that is done stays
        done) and, unless ``state`` is running, the job's end; False if the job
        had ended already."""

    def job(self, job_id: int) -> Job:
        """One job; NotFoundError if there is none with that id."""

    def jobs(self, *, limit: int = 50, state: JobState | None = None) -> list[Job]:
        """The newest jobs first."""


class JobStore(Policies, Jobs, Whereabouts, Protocol):
    """What running a job needs: the policies it plans from, the jobs, and where
    each guest is."""


class PolicyStore(Policies, FleetRecords, Tokens, Jobs, Protocol):
    """A store: each caller names the part it needs where it can (a job runner
    needs no tokens); the daemon and the interfaces hold the whole."""

    def close(self) -> None:
        """Release connections."""


__all__ = [
    "BrokenPolicy",
    "Change",
    "Delete",
    "Edges",
    "Job",
    "JobState",
    "Outcome",
    "PolicyStore",
    "Put",
    "Revision",
    "Role",
    "StoredPolicy",
    "Token",
    "Vet",
    "Whereabouts",
]
