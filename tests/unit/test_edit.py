"""Partial changes (merge patches) to a policy."""

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import DOCUMENTS, TOP, refusal
from virtpolicy.errors import PolicyError
from virtpolicy.policy.edit import (
    clear_path,
    dependency_patch,
    merge_patches,
    merged_policy,
    vcpupin_patch,
)
from virtpolicy.policy.model import parse_policy

CURRENT = parse_policy(
    {
        "guest": "web",
        "cpu": {"vcpupin": {0: "1", 1: "2"}, "weight": 100, "cap": 50},
        "requires": [{"guest": "db"}],
        "labels": {"tier": "fe", "app": "shop"},
    }
)


def test_patch_changes_only_given_fields() -> None:
    """Fields not in the patch keep their values."""
    after = merged_policy(CURRENT, "web", {"cpu": {"weight": 200}})
    assert after.cpu.weight == 200
    assert after.cpu.cap == 50
    assert after.labels == CURRENT.labels
    assert after.requires == CURRENT.requires


def test_patch_adds_and_removes_one_dependency() -> None:
    """Dependencies are addressed by guest: one added, one removed, others kept."""
    after = merged_policy(CURRENT, "web", {"requires": {"cache": {"when": "tcp:c:6379"}}})
    assert [(d.guest, d.when) for d in after.requires] == [
        ("db", "running"),
        ("cache", "tcp:c:6379"),
    ]
    after = merged_policy(after, "web", clear_path("requires.db"))
    assert [d.guest for d in after.requires] == ["cache"]


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("cpu.cap", lambda p: p.cpu.cap is None),
        ("cpu.vcpupin.1", lambda p: p.cpu.vcpupin == {0: "1"}),
        ("cpu.vcpupin", lambda p: p.cpu.vcpupin == {}),
        ("labels.tier", lambda p: p.labels == {"app": "shop"}),
        ("labels", lambda p: p.labels == {}),
        ("requires", lambda p: p.requires == ()),
    ],
)
def test_clear_path(path: str, check: object) -> None:
    """Clearing a path removes exactly that field."""
    after = merged_policy(CURRENT, "web", clear_path(path))
    assert check(after)  # type: ignore[operator]


@pytest.mark.parametrize("path", ["cpu", "cpu.foo", "color", "cpu.weight.1", "stop.x"])
def test_clear_unknown_path(path: str) -> None:
    """Clearing an unknown field is refused, naming it."""
    with pytest.raises(PolicyError, match=re.escape(f'"{path}" is not a field to clear')):
        clear_path(path)


def test_patch_on_nothing_creates() -> None:
    """Patching a guest with no policy starts from an empty one."""
    assert merged_policy(None, "new", {"cpu": {"weight": 7}}).to_document() == {
        "guest": "new",
        "cpu": {"weight": 7},
    }


def test_invalid_patch_names_the_field() -> None:
    """A patch that makes the policy invalid fails like any invalid policy."""
    with pytest.raises(PolicyError, match=r"cpu\.weight: 0 is below the minimum 1"):
        merged_policy(CURRENT, "web", {"cpu": {"weight": 0}})


def test_later_patches_win() -> None:
    """merge_patches keeps nulls (removals) and lets later values override."""
    assert merge_patches({"cpu": {"cap": None}}, {"cpu": {"weight": 1}}) == {
        "cpu": {"cap": None, "weight": 1}
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("db", {"db": {}}),
        ("db@tcp:db:5432", {"db": {"when": "tcp:db:5432"}}),
        ("db@agent", {"db": {"when": "agent"}}),
    ],
)
def test_dependency_spec(spec: str, expected: dict[str, dict[str, str]]) -> None:
    """GUEST[@WHEN] names the guest and, optionally, the condition."""
    assert dependency_patch(spec, "--requires") == expected


@pytest.mark.parametrize("spec", ["1", "x:1", ":1", "1:"])
def test_vcpupin_spec_invalid(spec: str) -> None:
    """--vcpupin needs VCPU:CPUSET."""
    with pytest.raises(PolicyError, match=re.escape(f'--vcpupin: "{spec}" is not VCPU:CPUSET')):
        vcpupin_patch(spec)


@given(
    st.dictionaries(st.sampled_from(TOP), DOCUMENTS, max_size=4)
    | DOCUMENTS.filter(lambda d: isinstance(d, dict))
)
def test_any_patch_is_applied_or_refused(patch: dict[str, Any]) -> None:
    """An arbitrary merge patch gives a policy or a PolicyError naming what is wrong, nothing else."""
    for current in (None, CURRENT):
        message = refusal(lambda c=current: merged_policy(c, "web", patch), PolicyError)
        assert message is None or (message and "\n" not in message)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"requires": ["db"]}, "requires"),
        ({"requires": {"db": "x"}}, "requires.db"),
        ({"wants": 3}, "wants"),
        ({"cpu": {"vcpupin": {"²": "1"}}}, "cpu.vcpupin"),
        ({"requires": {"\n": True}}, "requires.\\n"),  # found by hypothesis
    ],
)
def test_malformed_patch_names_the_field(patch: dict[str, Any], field: str) -> None:
    """Dependencies given as a list or a string, or a vCPU in non-ASCII digits, are
    refused by field, on one line (a control character in a key is escaped)."""
    with pytest.raises(PolicyError) as err:
        merged_policy(CURRENT, "web", patch)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["²:1", "٣:1", "1²:0"])
def test_vcpupin_flag_takes_ascii_digits_only(spec: str) -> None:
    """--vcpupin with digits int() cannot read (or reads as another number) is a usage error."""
    with pytest.raises(PolicyError, match="is not VCPU:CPUSET"):
        vcpupin_patch(spec)
