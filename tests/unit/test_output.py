"""Terminal rendering of what the daemon reports."""

from virtpolicy.cli.output import status
from virtpolicy.cli.stats import top_table


def test_status_table_shows_only_the_managed_scheduler_values() -> None:
    """QEMU reports some twenty scheduler parameters; the table shows those the policy
    manages (weight and cap in native units), so that a row fits a terminal."""
    actual = {
        "vcpupin": {"0": "1"},
        "emulatorpin": None,
        "sched": {
            "cpu_shares": 500,
            "global_period": 100000,
            "global_quota": 150000,
            "vcpu_period": 100000,
            "vcpu_quota": -1,
            "emulator_period": 100000,
            "emulator_quota": -1,
            "iothread_period": 100000,
        },
    }
    desired = {
        "vcpupin": {"0": "1"},
        "emulatorpin": None,
        "sched": {"cpu_shares": 500, "global_period": 100000, "global_quota": 150000},
    }
    row = {
        "guest": "web",
        "state": "running",
        "policy_revision": 3,
        "actual": actual,
        "desired": desired,
    }
    text = status([row])
    line = text.splitlines()[1]
    assert "cpu_shares=500 global_period=100000 global_quota=150000" in line
    assert "vcpu_quota" not in line
    assert "emulator_period" not in line


def test_top_groups_host_cpus_by_node_and_core() -> None:
    """Threads of one core together, nodes in order (CPUs numbered as Linux does:
    core k has threads k and k+4)."""
    host = {"cpus": [{"cpu": c, "busy_percent": 10.0 * c} for c in range(8)]}
    layout = [
        {"cpu": c, "node": 0 if c % 4 < 2 else 1, "core": f"{c % 4},{c % 4 + 4}"} for c in range(8)
    ]
    stats = [{"guest": "db", "vcpus": [{"vcpu": 0, "percent": 50.0}]}]
    statuses = [{"guest": "db", "actual": {"vcpupin": {"0": "5"}}}]
    lines = top_table(host, stats, statuses, layout).splitlines()
    assert lines[0].split() == ["NODE", "CORE", "CPU", "BUSY%", "PINNED", "VCPUS", "(CPU%)"]
    assert [line.split()[2] for line in lines[1:]] == ["0", "4", "1", "5", "2", "6", "3", "7"]
    assert lines[4].split()[:3] == ["0", "1,5", "5"]
    assert lines[4].split()[4] == "db/0(50.0)"
    bare = top_table(host, stats, statuses).splitlines()  # no layout: CPUs in order
    assert [line.split()[2] for line in bare[1:]] == [str(c) for c in range(8)]
