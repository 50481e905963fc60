"""What the commands talk to: the store in-process, or the daemon's API.

Both give the same values, so every command prints the same and exits with
the same status whether or not ``--server`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import quote

import httpx

from virtpolicy.config import default_run_dir
from virtpolicy.engine import changes, planning
from virtpolicy.engine.changes import HistoryEntry, Result, outcome_result
from virtpolicy.engine.jobs import settle
from virtpolicy.errors import EXIT_CONFLICT, EXIT_FAILED, EXIT_INVALID, VirtpolicyError
from virtpolicy.policy.graph import Waves
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import JobState, PolicyStore, Revision, StoredPolicy

_TIMEOUT_S = 30.0


class Service(Protocol):
    def get(self, guest: str) -> StoredPolicy: ...
    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]: ...
    def set(self, guest: str, patch: Mapping[str, Any], expect: int | None) -> Result: ...
    def delete(self, guest: str, expect: int | None) -> Result: ...
    def history(self, guest: str) -> list[HistoryEntry]: ...
    def apply(
        self, policies: Sequence[GuestPolicy], prune: bool, dry_run: bool
    ) -> list[Result]: ...
    def plan(self, operation: str, guests: Sequence[str] | None) -> Waves: ...
    def status(self, guest: str | None) -> list[dict[str, Any]]: ...
    def jobs(self, limit: int, state: str | None) -> list[dict[str, Any]]: ...
    def job(self, job_id: int) -> dict[str, Any]: ...


class RemoteError(VirtpolicyError):
    """An error the daemon answered with; the exit status follows its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        if status in (400, 413, 422):
            self.exit_code = EXIT_INVALID
        elif status in (409, 412):
            self.exit_code = EXIT_CONFLICT
        else:
            self.exit_code = EXIT_FAILED


class LocalService:
    """The store, in this process (``--db``)."""

    def __init__(self, store: PolicyStore, actor: str) -> None:
        self.store = store
        self.actor = actor

    def get(self, guest: str) -> StoredPolicy:
        return self.store.get(guest)

    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]:
        return self.store.list_policies(labels)

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

    def status(self, guest: str | None) -> list[dict[str, Any]]:
        return local_daemon("status").status(guest)

    def jobs(self, limit: int, state: str | None) -> list[dict[str, Any]]:
        settle(self.store)
        return [j.to_dict() for j in self.store.jobs(limit=limit, state=cast(JobState, state))]

    def job(self, job_id: int) -> dict[str, Any]:
        settle(self.store)
        return self.store.job(job_id).to_dict()


def local_daemon(what: str) -> RemoteService:
    """The local daemon's read-only socket, for what only the daemon knows."""
    socket = Path(default_run_dir()) / "virtpolicy-ro.sock"
    if not socket.exists():
        raise VirtpolicyError(
            f"{what} comes from the daemon, and none answers at {socket}: "
            "start `virtpolicy serve`, or give --server"
        )
    return RemoteService(str(socket))


class RemoteService:
    """The daemon's API: a Unix socket path, or an https:// URL with a token."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if server.startswith(("http://", "https://")):
            self._client = httpx.Client(base_url=server, headers=headers, timeout=_TIMEOUT_S)
        else:
            transport = httpx.HTTPTransport(uds=server)
            self._client = httpx.Client(
                transport=transport,
                base_url="http://virtpolicy",
                headers=headers,
                timeout=_TIMEOUT_S,
            )

    def get(self, guest: str) -> StoredPolicy:
        return _stored(self._call("GET", f"/v1/policies/{_seg(guest)}"))

    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]:
        params = [("label", f"{k}={v}") for k, v in labels.items()]
        return [_stored(item) for item in self._call("GET", "/v1/policies", params=params)]

    def set(self, guest: str, patch: Mapping[str, Any], expect: int | None) -> Result:
        return _result(
            self._call(
                "PATCH", f"/v1/policies/{_seg(guest)}", json=patch, headers=_if_match(expect)
            )
        )

    def delete(self, guest: str, expect: int | None) -> Result:
        return _result(
            self._call("DELETE", f"/v1/policies/{_seg(guest)}", headers=_if_match(expect))
        )

    def history(self, guest: str) -> list[HistoryEntry]:
        entries = self._call("GET", f"/v1/policies/{_seg(guest)}/history")
        return [
            HistoryEntry(
                Revision(
                    e.get("seq", 0),
                    guest,
                    e["revision"],
                    e["action"],
                    e["actor"],
                    e["time"],
                    GuestPolicy.model_validate(e["policy"]) if e["policy"] else None,
                ),
                e["change"],
            )
            for e in entries
        ]

    def apply(self, policies: Sequence[GuestPolicy], prune: bool, dry_run: bool) -> list[Result]:
        body = json.dumps([p.to_document() for p in policies])
        answer = self._call(
            "POST",
            "/v1/apply",
            content=body.encode(),
            params={"prune": str(prune).lower(), "dry_run": str(dry_run).lower()},
            headers={"content-type": "application/json"},
        )
        return [_result(r) for r in answer["results"]]

    def plan(self, operation: str, guests: Sequence[str] | None) -> Waves:
        params = [("guest", g) for g in guests or ()]
        waves: Waves = self._call("GET", f"/v1/plan/{operation}", params=params)["waves"]
        return waves

    def status(self, guest: str | None) -> list[dict[str, Any]]:
        if guest:
            return [self._call("GET", f"/v1/guests/{_seg(guest)}/status")]
        answer: list[dict[str, Any]] = self._call("GET", "/v1/status")
        return answer

    def jobs(self, limit: int, state: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        answer: list[dict[str, Any]] = self._call("GET", "/v1/jobs", params=params)
        return answer

    def job(self, job_id: int) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return answer

    def stats_guests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._call("GET", "/v1/stats/guests")
        return answer

    def stats_host(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/v1/stats/host")
        return answer

    def decisions(self, guest: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if guest:
            params["guest"] = guest
        answer: list[dict[str, Any]] = self._call("GET", "/v1/decisions", params=params)
        return answer

    def engines(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/v1/engines")
        return answer

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Have the daemon run a start or stop job; the job as recorded."""
        answer: dict[str, Any] = self._call("POST", "/v1/jobs", json=dict(request))
        return answer

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise VirtpolicyError(f"cannot reach the daemon at {self.server}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            message = (
                (data or {}).get("error", {}).get("message") if isinstance(data, dict) else None
            )
            raise RemoteError(message or f"HTTP {response.status_code}", response.status_code)
        return data


def _seg(guest: str) -> str:
    return quote(guest, safe="")


def _if_match(expect: int | None) -> dict[str, str]:
    return {"If-Match": f'"{expect}"'} if expect is not None else {}


def _stored(item: dict[str, Any]) -> StoredPolicy:
    return StoredPolicy(
        GuestPolicy.model_validate(item["policy"]),
        item["revision"],
        item["updated_at"],
        item["updated_by"],
    )


def _result(item: dict[str, Any]) -> Result:
    return Result(
        item["guest"], item["action"], item["revision"], item["changes"], item.get("diff")
    )
