"""The daemon's API as the commands use it (``--server``, and the local daemon's
read-only socket for what only the daemon knows).

Imports only what a client needs: no server, no store, no engine, so that a
command through the daemon starts quickly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from virtpolicy.cli.http import Client
from virtpolicy.errors import DaemonUnreachableError, RemoteError
from virtpolicy.places import default_run_dir

if TYPE_CHECKING:  # the policy model (pydantic) is imported by the commands that need it
    from virtpolicy.engine.changes import HistoryEntry, Result
    from virtpolicy.policy.graph import Waves
    from virtpolicy.policy.model import GuestPolicy
    from virtpolicy.store.base import BrokenPolicy, StoredPolicy

_TIMEOUT_S = 30.0


def local_daemon(what: str, *, write: bool = False) -> RemoteService:
    """The local daemon's read-only socket, for what only the daemon knows; with
    ``write``, its read-write one, for what only the daemon does."""
    socket = Path(default_run_dir()) / ("virtpolicy.sock" if write else "virtpolicy-ro.sock")
    if not socket.exists():
        raise DaemonUnreachableError(
            f"{what} comes from the daemon, and none answers at {socket}: "
            "start `virtpolicy serve`, or give --server"
        )
    return RemoteService(str(socket))


class RemoteService:
    """The daemon's API: a Unix socket path, or an https:// URL with a token."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = Client(server, headers, _TIMEOUT_S)

    def get(self, guest: str) -> StoredPolicy:
        return _stored(self._call("GET", f"/v1/policies/{_seg(guest)}"))

    def get_yaml(self, guest: str) -> str:
        """The policy as the daemon renders it in YAML (what `policy get` prints)."""
        answer: bytes = self._call(
            "GET", f"/v1/policies/{_seg(guest)}", headers={"accept": "application/yaml"}, raw=True
        )
        return answer.decode()

    def list_policies(self, labels: Mapping[str, str]) -> list[StoredPolicy]:
        return self.listing(labels)[0]

    def listing(self, labels: Mapping[str, str]) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
        from virtpolicy.store.base import BrokenPolicy  # noqa: PLC0415

        params = [("label", f"{k}={v}") for k, v in labels.items()]
        listed = self._call("GET", "/v1/policies", params=params)
        return [_stored(item) for item in listed if item.get("policy") is not None], [
            BrokenPolicy(
                item["guest"],
                item["revision"],
                item["updated_at"],
                item["updated_by"],
                item["broken"],
            )
            for item in listed
            if item.get("broken")
        ]

    def set(self, guest: str, patch: Mapping[str, Any], expect: int | None) -> Result:
        return _result(
            self._call(
                "PATCH", f"/v1/policies/{_seg(guest)}", json_body=patch, headers=_if_match(expect)
            )
        )

    def delete(self, guest: str, expect: int | None) -> Result:
        return _result(
            self._call("DELETE", f"/v1/policies/{_seg(guest)}", headers=_if_match(expect))
        )

    def history(self, guest: str) -> list[HistoryEntry]:
        from virtpolicy.engine.changes import HistoryEntry  # noqa: PLC0415
        from virtpolicy.policy.model import GuestPolicy  # noqa: PLC0415
        from virtpolicy.store.base import Revision  # noqa: PLC0415

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

    def status(self, guest: str | None, host: str | None = None) -> list[dict[str, Any]]:
        if guest:
            found = self._call("GET", f"/v1/guests/{_seg(guest)}/status")
            return [found] if host in (None, found.get("host")) else []
        params = {"host": host} if host else None
        answer: list[dict[str, Any]] = self._call("GET", "/v1/status", params=params)
        return answer

    def host(self) -> dict[str, Any]:
        """``GET /v1/host``: the daemon's connection, its host's CPUs and topology."""
        answer: dict[str, Any] = self._call("GET", "/v1/host")
        return answer

    def placement(self) -> dict[str, Any]:
        """``GET /v1/placement``: where the daemon's placer puts its host's guests."""
        answer: dict[str, Any] = self._call("GET", "/v1/placement")
        return answer

    def hosts(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._call("GET", "/v1/hosts")
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

    def tuners(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/v1/tuners")
        return answer

    def migration(self, guest: str, to: str) -> dict[str, Any]:
        """May ``guest`` migrate to host ``to``: ``allowed`` and the ``reasons``."""
        answer: dict[str, Any] = self._call(
            "GET", f"/v1/guests/{_seg(guest)}/migration", params={"to": to}
        )
        return answer

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Have the daemon run a start or stop job; the job as recorded."""
        answer: dict[str, Any] = self._call("POST", "/v1/jobs", json_body=dict(request))
        return answer

    def _call(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        try:
            status, body = self._client.request(method, path, **kwargs)
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
            raise DaemonUnreachableError(
                f"cannot reach the daemon at {self.server}: {reason}"
            ) from None
        if raw and status < 400:
            return body
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            error = error if isinstance(error, dict) else {}
            raise RemoteError(
                str(error.get("message") or f"HTTP {status}"), status, str(error.get("type") or "")
            )
        return data


def _seg(guest: str) -> str:
    return quote(guest, safe="")


def _if_match(expect: int | None) -> dict[str, str]:
    return {"If-Match": f'"{expect}"'} if expect is not None else {}


def _stored(item: dict[str, Any]) -> StoredPolicy:
    from virtpolicy.policy.model import GuestPolicy  # noqa: PLC0415
    from virtpolicy.store.base import StoredPolicy  # noqa: PLC0415

    return StoredPolicy(
        GuestPolicy.model_validate(item["policy"]),
        item["revision"],
        item["updated_at"],
        item["updated_by"],
    )


def _result(item: dict[str, Any]) -> Result:
    from virtpolicy.engine.changes import Result  # noqa: PLC0415

    return Result(
        item["guest"], item["action"], item["revision"], item["changes"], item.get("diff")
    )
