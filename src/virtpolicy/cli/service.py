"""What the commands talk to: the store in-process (here), or the daemon's API
(:mod:`virtpolicy.cli.remote`).

Both give the same values, so every command prints the same and exits with
the same status whether or not ``--server`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from virtpolicy.engine import changes, fleetview, planning
from virtpolicy.engine.changes import HistoryEntry, Result, outcome_result
from virtpolicy.engine.jobs.settle import settle
from virtpolicy.errors import NotFoundError
from virtpolicy.policy.graph import Waves
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import BrokenPolicy, PolicyStore, StoredPolicy
from virtpolicy.store.jobrecords import JobState


class Service(Protocol):
    def get(self, guest: str) -> StoredPolicy: ...
    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]: ...
    def listing(
        self, labels: Mapping[str, str]
    ) -> tuple[list[StoredPolicy], list[BrokenPolicy]]: ...
    def set(self, guest: str, patch: Mapping[str, Any], expect: int | None) -> Result: ...
    def delete(self, guest: str, expect: int | None) -> Result: ...
    def history(self, guest: str) -> list[HistoryEntry]: ...
    def apply(
        self, policies: Sequence[GuestPolicy], prune: bool, dry_run: bool
    ) -> list[Result]: ...
    def plan(self, operation: str, guests: Sequence[str] | None) -> Waves: ...
    def status(self, guest: str | None, host: str | None) -> list[dict[str, Any]]: ...
    def jobs(self, limit: int, state: str | None) -> list[dict[str, Any]]: ...
    def job(self, job_id: int) -> dict[str, Any]: ...
    def hosts(self) -> list[dict[str, Any]]: ...


class LocalService:
    """The store, in this process (``--db``)."""

    def __init__(self, store: PolicyStore, actor: str) -> None:
        self.store = store
        self.actor = actor

    def get(self, guest: str) -> StoredPolicy:
        return self.store.get(guest)

    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]:
        return self.store.list_policies(labels)

    def listing(self, labels: Mapping[str, str]) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
        return self.store.policies_and_broken(labels)

    def set(self, guest: str, patch: Mapping[str, Any], expect: int | None) -> Result:
        return outcome_result(
            changes.set_policy(self.store, guest, patch, actor=self.actor, expect=expect)
        )

    def delete(self, guest: str, expect: int | None) -> Result:
        return outcome_result(
            changes.delete_policy(self.store, guest, actor=self.actor, expect=expect)
        )

    def history(self, guest: str) -> list[HistoryEntry]:
        return changes.history(self.store, guest)

    def apply(self, policies: Sequence[GuestPolicy], prune: bool, dry_run: bool) -> list[Result]:
        outcomes = changes.apply_policies(
            self.store, policies, actor=self.actor, prune=prune, dry_run=dry_run
        )
        return [outcome_result(o, diff=dry_run) for o in outcomes]

    def plan(self, operation: str, guests: Sequence[str] | None) -> Waves:
        return planning.plan(self.store, "start" if operation == "start" else "stop", guests)

    def status(self, guest: str | None, host: str | None) -> list[dict[str, Any]]:
        found = [
            s for s in fleetview.fleet_statuses(self.store, host) if guest in (None, s["guest"])
        ]
        if guest and not found:
            raise NotFoundError(f"{guest}: no status (no policy, or not seen yet)")
        return found

    def hosts(self) -> list[dict[str, Any]]:
        return fleetview.hosts(self.store)

    def jobs(self, limit: int, state: str | None) -> list[dict[str, Any]]:
        settle(self.store)
        return [j.to_dict() for j in self.store.jobs(limit=limit, state=cast(JobState, state))]

    def job(self, job_id: int) -> dict[str, Any]:
        settle(self.store)
        return self.store.job(job_id).to_dict()
