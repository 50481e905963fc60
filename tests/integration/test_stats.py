"""Utilization data from a real libvirtd with QEMU guests of known load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    BUSY,
    IDLE,
    VIRTPOLICY,
    Cli,
    Daemon,
    api_client,
    eventually,
    virsh,
    wait_connected,
)

pytestmark = pytest.mark.integration


def stats_of(api: httpx.Client, guest: str) -> dict[str, Any] | None:
    for g in api.get("/v1/stats/guests").json():
        if g["guest"] == guest:
            return g  # type: ignore[no-any-return]
    return None


@pytest.mark.alone("machine")  # its figures are of load: no other test loads the host
def test_busy_guest_shows_more_cpu_and_rates_survive_a_restart(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[..., str],
) -> None:
    """Two one-vCPU guests pinned to host CPU 0, one spinning and one halted: the
    spinning one has far more CPU %. Destroyed and started again, it shows no
    negative or impossible rate, and is back to busy after. /metrics parses and
    carries both guests with their labels."""
    busy = make_guest("busy", vcpus=1, boot=BUSY)
    idle = make_guest("idle", vcpus=1, boot=IDLE)
    for g in (busy, idle):
        run("policy", "set", g, "--vcpus", "0")
    daemon = start_daemon(db, "--connect", qemu_uri, "--sample-interval", "1")
    wait_connected(daemon)
    virsh("start", busy)
    virsh("start", idle)
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    with httpx.Client(transport=transport, base_url="http://vp", timeout=10) as api:

        def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
            # Per-vCPU figures come from the sample after the first read on.
            b, i = stats_of(api, busy), stats_of(api, idle)
            ok = b and i and b["cpu_percent"] is not None and i["cpu_percent"] is not None
            ok = ok and b["vcpus"] and b["vcpus"][0]["percent"] is not None
            return (b, i) if ok else None

        b, i = eventually(settled, 30)
        assert b["cpu_percent"] > 50, b
        assert b["cpu_percent"] > i["cpu_percent"] + 30, (b, i)
        assert b["vcpus"][0]["percent"] > 50
        assert b["rss_kib"] > 0
        assert 0 <= b["vcpus"][0]["steal_percent"] <= 100

        virsh("destroy", busy)
        virsh("start", busy)
        again = time.time()

        def busy_again() -> list[dict[str, Any]] | None:  # two samples of the new run
            points = api.get(f"/v1/stats/guests/{busy}").json()["points"]
            after = [p for p in points if p["time"] > again + 1 and p["cpu"] is not None]
            return points if len(after) >= 2 else None

        history = eventually(busy_again, 30)
        values = [p["cpu"] for p in history if p["cpu"] is not None]
        # One vCPU (and QEMU's own threads): never negative, never a spike.
        assert all(0 <= v <= 150 for v in values), values
        assert history[-1]["cpu"] is not None
        assert history[-1]["cpu"] > 50, history[-3:]
        assert api.get(f"/v1/stats/guests/{busy}", params={"step": 3}).status_code == 200
        assert api.get("/v1/stats/guests/vp-test-nosuch").status_code == 404

        host = api.get("/v1/stats/host").json()
        assert host["sampler"]["samples"] >= 5
        assert host["sampler"]["errors"] == 0
        assert all(0 <= c["busy_percent"] <= 100 for c in host["cpus"] if c["busy_percent"])
        # The host's memory, from procfs as the kernel says it; and the same
        # through the fleet's record of the host, from its first heartbeat.
        total = int(Path("/proc/meminfo").read_text().split()[1])
        assert host["memory"]["total_kib"] == total
        assert 0 < host["memory"]["available_kib"] < total
        assert 0 < host["memory"]["used_percent"] < 100
        [record] = eventually(lambda: [h for h in api.get("/v1/hosts").json() if h["memory"]], 15)
        assert record["memory"]["total_kib"] == total
        assert 0 < record["memory"]["used_percent"] < 100
        # A guest's newest rates come with its history: its memory too.
        latest = api.get(f"/v1/stats/guests/{busy}").json()["latest"]
        assert latest["guest"] == busy
        assert latest["memory_max_kib"] == latest["memory_kib"] == 64 * 1024

        response = api.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
    seconds = {s.labels["guest"]: s.value for s in families["virtpolicy_guest_cpu_seconds"].samples}
    assert seconds[busy] > 0
    assert seconds[idle] >= 0
    vcpu_labels = [s.labels for s in families["virtpolicy_guest_vcpu_seconds"].samples]
    assert {"guest": busy, "vcpu": "0"} in vcpu_labels
    affinity = {
        (s.labels["guest"], s.labels["vcpu"]): s.value
        for s in families["virtpolicy_guest_vcpu_affinity_cpus"].samples
    }
    assert affinity[busy, "0"] == 1.0  # pinned to CPU 0 by its policy
    # The same through the CLI.
    server = ["--server", str(daemon.socket)]
    table = run(*server, "stats").stdout.splitlines()
    assert table[0].split() == [
        "GUEST", "STATE", "CPU%", "VCPU%", "STEAL%", "RSS_MIB", "BALLOON_MIB", "USABLE_MIB"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert float(rows[busy][2]) > float(rows[idle][2])
    one = run(*server, "stats", busy).stdout.splitlines()
    assert one[0].startswith(f"{busy}: CPU ")
    assert one[1].split() == ["VCPU", "CPU%", "STEAL%", "WAIT%"]
    assert run(*server, "stats", "vp-test-nosuch").exit_code == 1
    top = run(*server, "top").stdout.splitlines()
    assert top[0].split() == ["NODE", "CORE", "CPU", "BUSY%", "PINNED", "VCPUS", "(CPU%)"]
    cpu0 = next(line for line in top[1:] if line.split()[2] == "0")
    assert cpu0.split()[:2] == ["0", "0"]  # the lab's host: one node, no SMT
    assert f"{busy}/0(" in cpu0
    assert f"{idle}/0(" in cpu0


@pytest.mark.alone("machine")  # balance acts on the host's load: no other test adds to it
def test_balance_moves_a_busy_vcpu_off_a_crowded_host_cpu(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[..., str],
) -> None:
    """Two spinning one-vCPU guests with vcpus: auto, crowded onto host CPU 0 by
    hand: balance (enforce mode) pins one of them to CPU 1, which `virsh vcpupin`
    shows, and the decision log says why."""
    one = make_guest("bal1", vcpus=1, boot=BUSY)
    two = make_guest("bal2", vcpus=1, boot=BUSY)
    for g in (one, two):
        run("policy", "set", g, "--vcpus", "auto")
        virsh("start", g)
        virsh("vcpupin", g, "0", "0", "--live")
    daemon = start_daemon(
        db, "--connect", qemu_uri, "--sample-interval", "1", "--tuner", "static,balance"
    )
    wait_connected(daemon)

    def pins() -> dict[str, str]:
        return {g: virsh("vcpupin", g, "--live").split()[-1] for g in (one, two)}

    def spread() -> dict[str, str] | None:
        now = pins()
        return now if set(now.values()) == {"0", "1"} else None

    moved = eventually(spread, 40)
    assert sorted(moved.values()) == ["0", "1"]
    server = ["--server", str(daemon.socket)]
    log = run(*server, "decisions", "-o", "json")
    assert log.exit_code == 0, log.output
    applied = [d for d in json.loads(log.stdout) if d["outcome"] == "applied"]
    assert applied, log.stdout
    assert applied[0]["tuner"] == "balance"
    assert applied[0]["value"] == "1"
    assert applied[0]["reason"].startswith("CPU 0 was at ")
    # The static pass keeps balance's placement: it is within cpu.allowed (all).
    with api_client(daemon.socket) as api:
        samples = api.get("/v1/host").json()["samples"]
        eventually(lambda: api.get("/v1/host").json()["samples"] >= samples + 3, 20)
    assert pins() == moved
    tuners = run(*server, "tuners").stdout
    assert any(line.split()[:2] == ["balance", "running"] for line in tuners.splitlines())


EXAMPLE = Path(__file__).parents[2] / "examples" / "tuner-package"


def test_a_third_party_policy_installs_is_found_runs_and_is_logged(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[..., str],
    tmp_path: Path,
) -> None:
    """examples/tuner-package, installed with pip into a directory of its own,
    is listed by `virtpolicy tuners`, runs in the daemon (its hours set so that
    now is outside them), caps the batch guest, and its decision is logged."""
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source)  # pip builds in place: keep the checkout clean
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {"PYTHONPATH": str(site)}
    listed = subprocess.run(
        [str(VIRTPOLICY), "tuners"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert any(line.split()[:1] == ["batch-hours"] for line in listed.stdout.splitlines())
    guest = make_guest("batch", vcpus=1, boot=IDLE)
    run("policy", "set", guest, "--label", "class=batch")
    virsh("start", guest)
    daemon = start_daemon(
        db,
        "--connect",
        qemu_uri,
        "--sample-interval",
        "1",
        "--tuner",
        "static,batch-hours",
        *("--set", "start=24", "--set", "end=25", "--set", "cap=30"),
        env=env,
    )

    def quota() -> str:
        rows = (line.partition(":") for line in virsh("schedinfo", guest).splitlines())
        return {k.strip(): v.strip() for k, _, v in rows}.get("global_quota", "")

    eventually(lambda: quota() == "30000", 30)
    log = run("--server", str(daemon.socket), "decisions", guest, "-o", "json")
    applied = [d for d in json.loads(log.stdout) if d["outcome"] == "applied"]
    assert [(d["tuner"], d["action"], d["value"]) for d in applied] == [("batch-hours", "cap", 30)]
    assert "outside the free hours 24-25: capping at 30 %" in applied[0]["reason"]
