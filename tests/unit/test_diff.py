"""Field changes and unified diffs between policy versions."""

from virtpolicy.policy.diff import field_changes, summarize, unified_diff
from virtpolicy.policy.model import parse_policy

OLD = parse_policy(
    {"guest": "w", "cpu": {"weight": 100}, "requires": [{"guest": "db"}], "labels": {"a": "1"}}
)
NEW = parse_policy(
    {
        "guest": "w",
        "cpu": {"weight": 200, "vcpupin": {0: "1"}},
        "requires": [{"guest": "db", "when": "agent"}],
    }
)


def test_field_changes() -> None:
    """Each changed leaf is listed once with old and new values."""
    assert [str(c) for c in field_changes(OLD, NEW)] == [
        "+cpu.vcpupin.0=1",
        "cpu.weight: 100 -> 200",
        "-labels.a",
        "requires.db: running -> agent",
    ]


def test_summaries() -> None:
    """History summaries for create, update, no-op and delete."""
    assert summarize(None, OLD) == "created: +cpu.weight=100, +labels.a=1, +requires.db=running"
    assert summarize(OLD, OLD) == "no change"
    assert summarize(OLD, None) == "deleted"
    assert summarize(None, parse_policy({"guest": "w"})) == "created (all defaults)"


def test_unified_diff() -> None:
    """The unified diff shows changed YAML lines under the revision labels."""
    diff = unified_diff(OLD, NEW, "w@1", "w@2")
    assert diff.startswith("--- w@1\n+++ w@2\n")
    assert "-  weight: 100\n" in diff
    assert "+  weight: 200\n" in diff
    assert unified_diff(OLD, OLD, "a", "b") == ""
