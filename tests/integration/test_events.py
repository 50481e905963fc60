"""The daemon's event stream (Server-Sent Events) on a real libvirtd."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Cli, Daemon, virsh, wait_connected

pytestmark = pytest.mark.integration


def events(lines: Iterator[str]) -> Iterator[dict[str, object]]:
    """Decoded events from an SSE stream's lines (comments skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if "data" in fields:
            event = json.loads(fields["data"])
            assert (str(event["id"]), event["kind"]) == (fields["id"], fields["event"])
            yield event
        fields = {}


def until(
    stream: Iterator[dict[str, object]], seen: list[dict[str, object]], **match: object
) -> dict[str, object]:
    for event in stream:
        seen.append(event)
        if all(event.get(k) == v for k, v in match.items()):
            return event
    raise AssertionError(f"the stream ended before {match}")


def test_lifecycle_and_dependency_events_and_resume(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
) -> None:
    """A lifecycle event arrives after `virsh start`, a destroyed dependency gives a
    dependency event for its dependent, a policy written through the store by
    another process an event of its own, and a reconnect with Last-Event-ID
    resumes. (The streams' read timeouts only keep a lost event from hanging the
    test: no timing is asserted; a loaded machine once took over a second.)"""
    dbg, web = make_guest("edb"), make_guest("eweb")
    run("policy", "set", web, "--requires", dbg)
    daemon = start_daemon(db, "--connect", qemu_uri, "--reconcile-interval", "3600")
    wait_connected(daemon)
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    timeout = httpx.Timeout(10.0, read=1.0)
    with (
        httpx.Client(transport=transport, base_url="http://vp", timeout=timeout) as api,
        api.stream("GET", "/v1/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == ": virtpolicy events"
        stream = events(lines)
        seen: list[dict[str, object]] = []
        virsh("start", dbg)
        first = until(stream, seen, kind="lifecycle", guest=dbg, event="started")
        virsh("start", web)
        until(stream, seen, kind="lifecycle", guest=web, event="started")
        virsh("destroy", dbg)
        until(stream, seen, kind="lifecycle", guest=dbg, event="stopped")
        dependency = until(stream, seen, kind="dependency")
        assert {k: dependency[k] for k in ("guest", "dependency", "event", "action")} == {
            "guest": web,
            "dependency": dbg,
            "event": "stopped",
            "action": "none",
        }
    # A write by another process through the store is noticed by the store watch.
    run("policy", "set", dbg, "--weight", "200")
    with (
        httpx.Client(transport=transport, base_url="http://vp", timeout=timeout) as api,
        api.stream(
            "GET",
            "/v1/events",
            params={"kind": "policy"},
            headers={"Last-Event-ID": str(dependency["id"])},
        ) as response,
    ):
        policy = until(events(response.iter_lines()), seen, kind="policy")
        assert (policy["guest"], policy["revision"], policy["action"]) == (dbg, 1, "create")
    # Resume after the first event: the next one kept comes first, filtered by kind.
    with (
        httpx.Client(transport=transport, base_url="http://vp", timeout=timeout) as api,
        api.stream(
            "GET",
            "/v1/events",
            params={"kind": "lifecycle"},
            headers={"Last-Event-ID": str(first["id"])},
        ) as response,
    ):
        resumed = [next(events(response.iter_lines()))]
        after = seen[seen.index(first) + 1 :]
        assert resumed == [e for e in after if e["kind"] == "lifecycle"][:1]
        bad = api.get("/v1/events", params={"kind": "weather"})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"].startswith('kind: "weather" is not one of')
