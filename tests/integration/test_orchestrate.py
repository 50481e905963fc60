"""Ordered start and stop on the test driver, with the project's node XML."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from virtpolicy.engine.jobs.orchestrate import GuestResult, Orchestrator
from virtpolicy.errors import CycleError
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.policy.model import GuestPolicy, parse_policy

pytestmark = pytest.mark.integration

SHOP = Path(__file__).parent / "nodes" / "shop.xml"
ALL = ("db", "api", "cache", "web", "batch")


@pytest.fixture
def hv() -> Iterator[LibvirtConnection]:
    """The shop host with every guest shut off."""
    h = LibvirtConnection(f"test://{SHOP}")
    h.open()
    for guest in ALL:
        h.destroy(guest)
    yield h
    h.close()


def policies(*docs: dict[str, Any]) -> dict[str, GuestPolicy]:
    return {d["guest"]: parse_policy(d) for d in docs}


def by_guest(results: list[GuestResult]) -> dict[str, GuestResult]:
    return {r.guest: r for r in results}


def running(hv: LibvirtConnection) -> set[str]:
    return {g.name for g in hv.guests() if g.running}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DIAMOND = policies(
    {"guest": "db"},
    {"guest": "api", "requires": [{"guest": "db", "when": "exec:sleep 0.3"}]},
    {"guest": "cache", "requires": [{"guest": "db", "when": "exec:sleep 0.3"}]},
    {"guest": "web", "requires": [{"guest": "api"}, {"guest": "cache"}]},
)


def test_diamond_starts_in_order_with_parallel_middle(hv: LibvirtConnection) -> None:
    """db first; api and cache together once db's condition holds; web last."""
    results = by_guest(asyncio.run(Orchestrator(hv, DIAMOND).start(["web"])))
    assert {g: r.result for g, r in results.items()} == dict.fromkeys(
        ("db", "api", "cache", "web"), "started"
    )
    assert running(hv) == {"db", "api", "cache", "web"}
    t = {g: r.seconds for g, r in results.items()}
    assert t["db"] < t["api"]
    assert t["db"] < t["cache"]
    assert max(t["api"], t["cache"]) < t["web"]
    assert t["api"] - t["db"] >= 0.3
    # In parallel: both waited for the same 0.3 s, not one after the other.
    assert abs(t["api"] - t["cache"]) < 0.25


def test_chain_and_already_running(hv: LibvirtConnection) -> None:
    """A chain starts bottom-up; a guest already running is left as it is."""
    hv.start("db")
    chain = policies(
        {"guest": "api", "requires": [{"guest": "db"}]},
        {"guest": "web", "requires": [{"guest": "api"}]},
    )
    results = by_guest(asyncio.run(Orchestrator(hv, chain).start(["web"])))
    assert results["db"].result == "already running"
    assert results["api"].seconds < results["web"].seconds
    assert running(hv) == {"db", "api", "web"}


def test_tcp_condition_is_waited_for(hv: LibvirtConnection) -> None:
    """web waits until the port it requires is opened, half a second later."""
    port = closed_port()
    server = socket.socket()

    def open_later() -> None:
        time.sleep(0.5)
        server.bind(("127.0.0.1", port))
        server.listen()

    threading.Thread(target=open_later).start()
    try:
        deps = policies(
            {
                "guest": "web",
                "requires": [{"guest": "db", "when": f"tcp:127.0.0.1:{port}", "timeout": 20}],
            }
        )
        results = by_guest(asyncio.run(Orchestrator(hv, deps).start(["web"])))
    finally:
        server.close()
    assert results["web"].result == "started"
    assert results["web"].seconds >= 0.5


def test_requires_timeout_holds_dependents_back(hv: LibvirtConnection) -> None:
    """A requires whose condition never holds leaves its dependents unstarted, saying why."""
    port = closed_port()
    deps = policies(
        {
            "guest": "api",
            "requires": [{"guest": "db", "when": f"tcp:127.0.0.1:{port}", "timeout": 1}],
        },
        {"guest": "web", "requires": [{"guest": "api"}]},
    )
    results = by_guest(asyncio.run(Orchestrator(hv, deps).start(["web"])))
    assert results["db"].result == "started"
    assert results["api"].result == "held back"
    assert results["api"].detail.startswith(
        f"api requires db (tcp:127.0.0.1:{port}): connection refused, "
    )
    assert results["api"].detail.endswith(" over 1 s")
    assert results["web"].result == "held back"
    assert results["web"].detail.startswith("web requires api: api requires db")
    assert running(hv) == {"db"}


def test_failed_wants_lets_dependents_go_on(hv: LibvirtConnection) -> None:
    """A wants that fails is noted, and its dependent still starts."""
    deps = policies(
        {"guest": "web", "wants": [{"guest": "cache", "when": "exec:false", "timeout": 1}]}
    )
    results = by_guest(asyncio.run(Orchestrator(hv, deps).start(["web"])))
    assert results["web"].result == "started"
    assert results["web"].detail.startswith("went on: web wants cache (exec:false): false exited 1")


def test_unknown_dependency_fails_its_dependents(hv: LibvirtConnection) -> None:
    """A dependency libvirt does not know fails that start; dependents stay down."""
    deps = policies({"guest": "web", "requires": [{"guest": "ghost"}]})
    results = by_guest(asyncio.run(Orchestrator(hv, deps).start(["web"])))
    assert (results["ghost"].result, results["ghost"].detail) == (
        "failed",
        f"ghost: no such guest on test://{SHOP}",
    )
    assert results["web"].result == "held back"
    assert "web" not in running(hv)


def test_stop_stops_dependents_first(hv: LibvirtConnection) -> None:
    """stop db stops web, then api and cache, then db."""
    asyncio.run(Orchestrator(hv, DIAMOND).start(["web"]))
    results = asyncio.run(Orchestrator(hv, DIAMOND).stop(["db"]))
    order = [r.guest for r in results]
    assert order[0] == "web"
    assert set(order[1:3]) == {"api", "cache"}
    assert order[3] == "db"
    assert all(r.result == "stopped" for r in results)
    assert running(hv) == set()


def test_cycle_from_an_older_store_is_refused_at_start(hv: LibvirtConnection) -> None:
    """A cycle that got into the store is refused again when starting."""
    # Each policy is valid alone; only the graph of both has the cycle.
    cyclic = policies(
        {"guest": "a", "requires": [{"guest": "b"}]}, {"guest": "b", "requires": [{"guest": "a"}]}
    )
    with pytest.raises(CycleError):
        asyncio.run(Orchestrator(hv, cyclic).start(["a"]))
    assert running(hv) == set()


def test_cli_start_and_stop(run: Cli) -> None:
    """`virtpolicy start` reports a table and exit 0; --dry-run only prints the plan."""
    for args in (
        ["db"],
        ["api", "--requires", "db"],
        ["web", "--requires", "api", "--label", "tier=fe"],
    ):
        assert run("policy", "set", *args).exit_code == 0
    connect = ["--connect", f"test://{SHOP}"]
    plan = run("start", "--label", "tier=fe", "--dry-run", *connect)
    assert plan.stdout == "WAVE   GUESTS\n1      db\n2      api\n3      web\n"
    result = run("start", "web", *connect, "-o", "json")
    assert result.exit_code == 0
    assert result.stdout.count('"already running"') == 3  # a fresh connection: all run
    stopped = run("stop", "db", *connect)
    assert stopped.exit_code == 0
    rows = [line.split()[::2][:2] for line in stopped.stdout.splitlines()[1:] if line.strip()]
    assert [g for g, _ in rows] == ["web", "api", "db"]
    assert {r for _, r in rows} == {"stopped"}
    assert run("start", *connect).exit_code == 2
