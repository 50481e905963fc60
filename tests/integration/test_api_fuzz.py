"""Schemathesis against the API's own OpenAPI document: no input makes a 5xx.

Driven by hand (operation by operation, with hypothesis) rather than through
schemathesis' pytest plugin, which does not run under pytest 9. Run twice:
in-process (the app as ASGI, as root on the read-write socket) and over the
daemon's TLS listener with an admin token.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import Cli
from tests.integration.test_api import FakeDaemon
from virtpolicy.api.app import create_app
from virtpolicy.api.auth import PEER_KEY
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration

#: Routes whose body the document declares, with the schema that says what it is.
BODIES = {
    "PUT /v1/policies/{guest}",
    "PATCH /v1/policies/{guest}",
    "POST /v1/apply",
    "POST /v1/validate",
    "POST /v1/jobs",
}


def fuzz(
    schema: Any, call: Callable[[Any], Any], examples: int, skip: frozenset[str] = frozenset()
) -> dict[str, set[int]]:
    """Every operation of ``schema`` (but ``skip``) with generated cases; the statuses
    each answered. Fails on any 5xx."""
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if f"{op.method.upper()} {op.path}" not in skip
    ]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same cases every run: what is reached does not vary
        )
        def run(case: Any) -> None:
            response = call(case)
            answered.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        run()
    assert failures == []
    # Every operation was really called, and the generator reached past input
    # validation into the handlers (2xx answers), also for the documented bodies.
    assert len(answered) == len(operations)
    assert set(answered) >= BODIES
    return answered


def test_no_server_errors_in_process(tmp_path: Path) -> None:
    """Generated requests for every operation get 2xx or 4xx answers, never 5xx."""
    store = SqlStore(str(tmp_path / "fuzz.db"))
    api = create_app(store, "unix", FakeDaemon(store))

    async def as_root(scope: Any, receive: Any, send: Any) -> None:
        await api(
            {**scope, PEER_KEY: (1, 0, 0)} if scope["type"] == "http" else scope, receive, send
        )

    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", as_root)
    try:
        answered = fuzz(schema, lambda case: case.call(), examples=25)
    finally:
        store.close()
    reached = {op for op, codes in answered.items() if any(c < 300 for c in codes)}
    assert reached & {"PUT /v1/policies/{guest}", "POST /v1/validate", "POST /v1/apply"}


def test_no_server_errors_over_tls_with_a_token(
    https: str, tls: tuple[Path, Path], run: Cli
) -> None:
    """The same over the daemon's TLS listener, as an admin token; the document itself
    is served there only with a token."""
    token = run("token", "create", "fuzz", "--role", "admin").output.strip()
    url = https
    context = ssl.create_default_context(cafile=str(tls[0]))
    assert httpx.get(url + "/v1/openapi.json", verify=context).status_code == 401
    headers = {"Authorization": f"Bearer {token}"}
    document = httpx.get(url + "/v1/openapi.json", verify=context, headers=headers).json()
    schema = schemathesis.openapi.from_dict(document)
    answered = fuzz(
        schema,
        lambda case: case.call(base_url=url, headers=headers, verify=str(tls[0]), timeout=30),
        examples=10,
        skip=frozenset({"GET /v1/events"}),  # a live stream: it never ends by itself
    )
    assert any(code < 300 for codes in answered.values() for code in codes)


def test_wrong_method_names_the_allowed_ones(tmp_path: Path) -> None:
    """405 carries an Allow header, and the OpenAPI document lists 404 for a guest route."""
    store = SqlStore(str(tmp_path / "p.db"))
    api = create_app(store, "unix", FakeDaemon(store))
    try:
        from fastapi.testclient import TestClient  # noqa: PLC0415

        with TestClient(api) as c:
            r = c.post("/v1/status")
            assert r.status_code == 405
            assert r.headers["allow"] == "GET"
        doc = api.openapi()
        assert "404" in doc["paths"]["/v1/policies/{guest}"]["get"]["responses"]
        put = doc["paths"]["/v1/policies/{guest}"]["put"]
        assert put["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/GuestPolicy"
        }
    finally:
        store.close()
