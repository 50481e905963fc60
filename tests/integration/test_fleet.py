"""Several daemons on one PostgreSQL store: the hosts of a fleet.

Daemons run on libvirt's test driver with node files of our own
(``nodes/fleet-a.xml``, ``nodes/fleet-b.xml``); the store is the lab's real
PostgreSQL (``tests/lab/postgres``).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, Daemon, eventually

pytestmark = pytest.mark.integration

NODES = Path(__file__).parent / "nodes"
HEARTBEAT = "0.5"


def test_hosts_register_beat_and_a_killed_one_is_lost(
    pg_db: str, start_daemon: Callable[..., Daemon]
) -> None:
    """Two daemons register with their guests; `hosts -o json` (in-process and
    through a daemon) shows both up; one killed with SIGKILL is lost within three
    heartbeats, one stopped cleanly is left."""
    a = start_daemon(
        pg_db, "--connect", f"test://{NODES / 'fleet-a.xml'}", "--host", "host-a",
        "--heartbeat", HEARTBEAT,
    )  # fmt: skip
    b = start_daemon(
        pg_db, "--connect", f"test://{NODES / 'fleet-b.xml'}", "--host", "host-b",
        "--heartbeat", HEARTBEAT,
    )  # fmt: skip
    run = Cli(pg_db)

    def hosts(*via: str) -> dict[str, dict[str, object]]:
        answer = run(*via, "hosts", "-o", "json")
        assert answer.exit_code == 0, answer.output
        return {h["name"]: h for h in json.loads(answer.stdout)}

    def both_up() -> dict[str, dict[str, object]] | None:
        seen = hosts()
        ok = {n: (h["state"], h["guests"], h["running"]) for n, h in seen.items()} == {
            "host-a": ("up", 2, 2),
            "host-b": ("up", 2, 2),
        }
        return seen if ok else None

    seen = eventually(both_up, 20)
    assert set(seen["host-a"]) >= {"name", "state", "uri", "guests", "running", "heartbeat"}
    assert seen["host-a"]["uri"] == f"test://{NODES / 'fleet-a.xml'}"
    assert hosts("--server", str(b.socket)).keys() == {"host-a", "host-b"}
    table = run("hosts").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "URI", "GUESTS", "RUNNING", "HEARTBEAT"]

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.killed = True
    # Lost after three missed beats (1.5 s): looked for within ten.
    eventually(lambda: hosts()["host-a"]["state"] == "lost", 10)
    assert hosts()["host-b"]["state"] == "up"

    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(15) == 0
    b.killed = True
    final = hosts()
    assert (final["host-b"]["state"], final["host-b"]["guests"]) == ("left", 0)
    assert final["host-a"]["state"] == "lost"
