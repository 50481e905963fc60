"""Terminal rendering of what the daemon reports."""

from virtpolicy.cli.output import status


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
