"""Schemathesis against the API's own OpenAPI document, with every check
(``--checks all``): no input makes a 5xx, and the document says exactly what
the server accepts and answers.

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
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, FailureGroup, load_all_checks

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


#: A write with If-Match of a revision that is not current answers 412, whatever
#: the body: a valid request refused for the stored state, as 409 is.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "412"]
            }
        }
    }
)


def register_formats() -> None:
    """What the document names as formats, drawn as the server reads them: a
    cpuset that selects a CPU, a size within bounds, a condition of each kind."""
    cpu = st.integers(0, 16383)
    span = st.tuples(cpu, st.integers(0, 64)).map(lambda p: f"{p[0]}-{min(p[0] + p[1], 16383)}")
    schemathesis.openapi.format(
        "cpuset", st.lists(cpu.map(str) | span, min_size=1, max_size=4).map(",".join)
    )
    label = r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
    host = st.from_regex(rf"{label}(\.{label}){{0,2}}", fullmatch=True)
    schemathesis.openapi.format(
        "virtpolicy-size",
        st.builds(lambda n, u: f"{n}{u}", st.integers(1, 1024), st.sampled_from(["M", "G", "GiB"])),
    )
    schemathesis.openapi.format(
        "virtpolicy-condition",
        st.one_of(
            st.sampled_from(["running", "agent", "tcp:[::1]:22", "exec:true"]),
            st.builds(lambda h, p: f"tcp:{h}:{p}", host, st.integers(1, 65535)),
        ),
    )


def possible(case: Any) -> bool:
    """Whether a body keeps the rules no JSON Schema can state (the document
    says them in words): no dependency on the guest itself, no guest twice
    among one policy's dependencies, no cycle within one body, each guest
    once in a body of several, and a PUT's or PATCH's body names the guest of
    its URL, if any."""
    body = case.body if isinstance(case.body, (dict, list)) else None
    docs = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    edges: dict[str, set[str]] = {}
    in_path = (case.path_parameters or {}).get("guest")
    if isinstance(in_path, str):
        in_path = unquote(in_path)
    named = [d.get("guest") for d in docs if isinstance(d, dict)]
    if len(set(map(str, named))) != len(named):  # each guest once in a file
        return False
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        guest = doc.get("guest", in_path)
        if case.method in ("PUT", "PATCH") and guest != in_path:  # the URL's guest, if any
            return False
        if case.method == "PATCH":  # dependencies by guest: the keys
            guest = in_path
            deps = [g for k in ("requires", "wants") for g in _items(doc.get(k), dict)]
        else:
            deps = [
                d.get("guest")
                for k in ("requires", "wants")
                for d in _items(doc.get(k), list)
                if isinstance(d, dict)
            ]
        if guest in deps or len(set(map(str, deps))) != len(deps):
            return False
        edges[str(guest)] = set(map(str, deps))
    return not _cyclic(edges)


def _items(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) else ()


def _cyclic(edges: dict[str, set[str]]) -> bool:
    seen: set[str] = set()
    path: set[str] = set()

    def visit(node: str) -> bool:
        if node in path:
            return True
        if node in seen:
            return False
        seen.add(node)
        path.add(node)
        found = any(visit(n) for n in edges.get(node, ()))
        path.discard(node)
        return found

    return any(visit(n) for n in list(edges))


def fuzz(
    schema: Any,
    call: Callable[[Any], Any],
    examples: int,
    skip: frozenset[str] = frozenset(),
    again: dict[str, Any] | None = None,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> dict[str, set[int]]:
    """Every operation of ``schema`` (but ``skip``) with generated cases, schema-valid
    ones and schema-violating ones, each answer put through every check of
    schemathesis (``--checks all``: no 5xx, documented statuses, content types and
    headers, valid data accepted, invalid data refused, ...); the statuses each
    operation answered. Fails listing every failure found. ``again``: how the
    checks that send requests of their own send them (headers, TLS)."""
    load_all_checks()
    register_formats()
    checks = CHECKS.get_all()
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if f"{op.method.upper()} {op.path}" not in skip
    ]
    assert len(operations) >= 10
    for mode in modes:
        for operation in operations:
            try:
                run = _cases(operation, mode, examples, call, checks, again or {})
                run(failures, answered)
            except Unsatisfiable:  # nothing in it can be made invalid (no parameters)
                assert mode == GenerationMode.NEGATIVE
    assert failures == [], "\n".join(failures[:5])
    # Every operation was really called, and the generator reached past input
    # validation into the handlers (2xx answers), also for the documented bodies.
    # (Schema-violating cases alone cannot reach an operation without parameters.)
    assert set(answered) >= BODIES
    if GenerationMode.POSITIVE in modes:
        assert len(answered) == len(operations)
    return answered


def _cases(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    call: Callable[[Any], Any],
    checks: list[Any],
    again: dict[str, Any],
) -> Callable[[list[str], dict[str, set[int]]], None]:
    """The hypothesis test of one operation in one mode."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same cases every run: what is reached does not vary
    )
    def run(failures: list[str], answered: dict[str, set[int]], case: Any) -> None:
        assume(mode == GenerationMode.NEGATIVE or possible(case))
        response = call(case)
        answered.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        try:
            case.validate_response(response, checks=checks, **again)
        except FailureGroup as exc:
            failures.append(f"{mode.value} {case.method} {case.formatted_path}: {exc}")

    return run  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.long
def test_no_server_errors_in_process(tmp_path: Path, mode: GenerationMode) -> None:
    """Generated requests for every operation get 2xx or 4xx answers, never 5xx:
    schema-valid ones, and schema-violating ones (two tests, run side by side)."""
    store = SqlStore(str(tmp_path / "fuzz.db"))
    api = create_app(store, "unix", FakeDaemon(store))

    async def as_root(scope: Any, receive: Any, send: Any) -> None:
        await api(
            {**scope, PEER_KEY: (1, 0, 0)} if scope["type"] == "http" else scope, receive, send
        )

    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", as_root, config=CONFIG)
    try:
        answered = fuzz(schema, lambda case: case.call(), examples=12, modes=(mode,))
    finally:
        store.close()
    if mode == GenerationMode.POSITIVE:
        reached = {op for op, codes in answered.items() if any(c < 300 for c in codes)}
        assert reached & {"PUT /v1/policies/{guest}", "POST /v1/validate", "POST /v1/apply"}


@pytest.mark.long
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
    schema = schemathesis.openapi.from_dict(document, config=CONFIG)
    answered = fuzz(
        schema,
        lambda case: case.call(base_url=url, headers=headers, verify=str(tls[0]), timeout=30),
        examples=10,
        again={"headers": headers, "transport_kwargs": {"verify": str(tls[0]), "base_url": url}},
        # Schema-violating cases ran in-process; here each call carries the token,
        # which a case without one would only seem to leave out.
        modes=(GenerationMode.POSITIVE,),
        skip=frozenset({"GET /v1/events"}),  # a live stream: it never ends by itself
    )
    assert any(code < 300 for codes in answered.values() for code in codes)


def test_wrong_method_names_the_allowed_ones(tmp_path: Path) -> None:
    """405 carries an Allow header naming every method of the path (it named only
    POST for /v1/jobs, which GET reads too); the document lists the statuses and
    the bodies the routes have, and says how a TCP caller authenticates (a
    bearer scheme), not an "authorization" header parameter."""
    store = SqlStore(str(tmp_path / "p.db"))
    api = create_app(store, "unix", FakeDaemon(store))
    try:
        from fastapi.testclient import TestClient  # noqa: PLC0415

        with TestClient(api) as c:
            r = c.post("/v1/status")
            assert (r.status_code, r.headers["allow"]) == (405, "GET")
            r = c.options("/v1/jobs")
            assert (r.status_code, r.headers["allow"]) == (405, "GET, POST")
            r = c.request("OPTIONS", "/v1/policies/web")
            assert r.headers["allow"] == "DELETE, GET, PATCH, PUT"
        doc = api.openapi()
        assert "404" in doc["paths"]["/v1/policies/{guest}"]["get"]["responses"]
        put = doc["paths"]["/v1/policies/{guest}"]["put"]
        assert put["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PolicyBody"
        }
        assert {"201", "415", "422"} <= set(put["responses"])
        assert {"201"} <= set(doc["paths"]["/v1/policies/{guest}"]["patch"]["responses"])
        every = [
            p
            for item in doc["paths"].values()
            for op in item.values()
            for p in op.get("parameters", [])
        ]
        assert not [p for p in every if p["name"].lower() == "authorization"]
        assert "securitySchemes" not in doc["components"]  # the Unix sockets: the peer
        tcp = create_app(store, "tcp", FakeDaemon(store)).openapi()
        assert tcp["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert tcp["security"] == [{"bearer": []}]
    finally:
        store.close()
