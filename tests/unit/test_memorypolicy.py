"""The memory section of a policy: sizes, their one spelling, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.errors import PolicyError
from virtpolicy.policy.diff import field_changes
from virtpolicy.policy.memory import show_size, size_kib
from virtpolicy.policy.model import parse_policy


def memory(**fields: object) -> dict[str, object]:
    return {"guest": "db", "memory": fields}


@pytest.mark.parametrize(
    ("text", "kept", "kib"),
    [
        ("1G", "1G", 1024**2),
        ("1.5G", "1536M", 1536 * 1024),
        ("1024M", "1G", 1024**2),
        (" 2 GiB ", "2G", 2 * 1024**2),
        ("512m", "512M", 512 * 1024),
        ("1536K", "1536K", 1536),
        ("64T", "64T", 64 * 1024**3),
    ],
)
def test_a_size_is_kept_in_one_spelling(text: str, kept: str, kib: int) -> None:
    policy = parse_policy(memory(floor=text, soft_limit=text))
    assert policy.memory.floor == kept
    assert policy.memory.floor_kib == kib
    assert policy.memory.soft_limit_kib == kib
    # What is kept reads back as the same.
    assert parse_policy(policy.to_document()) == policy


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"floor": 1024},
            "memory.floor: 1024 is not a size: a number and a unit, K, M, G or T (e.g. 512M)",
        ),
        (
            {"floor": "1GB"},
            'memory.floor: "1GB" is not a size: a number and a unit, K, M, G or T (e.g. 512M)',
        ),
        ({"floor": "0M"}, 'memory.floor: "0M" is not between 1M and 64T'),
        ({"soft_limit": "65T"}, 'memory.soft_limit: "65T" is not between 1M and 64T'),
        ({"floor": "1.0001K"}, 'memory.floor: "1.0001K" is not a whole number of KiB'),
        ({"floor": True}, "memory.floor: True is not a string (quote it)"),
        ({"balloon": "auto"}, "memory.floor: is required with memory.balloon: auto"),
        ({"balloon": "on"}, "memory.balloon: \"on\" is not one of 'off' or 'auto'"),
        ({"weight": 0}, "memory.weight: 0 is below the minimum 1"),
        ({"weight": 10001}, "memory.weight: 10001 is above the maximum 10000"),
        ({"free_page_reporting": "yes"}, 'memory.free_page_reporting: "yes" is not true or false'),
        ({"swap": "1G"}, "memory.swap: unknown field"),
    ],
)
def test_a_bad_memory_field_is_refused_naming_it(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(memory(**fields))
    assert str(refused.value) == message


@given(st.integers(1024, 64 * 1024**3))
def test_every_size_shown_reads_back_as_itself(kib: int) -> None:
    assert size_kib(show_size(kib)) == kib


def test_the_memory_fields_show_in_a_diff() -> None:
    before = parse_policy(memory(weight=100))
    after = parse_policy(memory(balloon="auto", floor="1G", weight=200))
    changed = {c.path: (c.old, c.new) for c in field_changes(before, after)}
    assert changed == {
        "memory.balloon": (None, "auto"),
        "memory.floor": (None, "1G"),
        "memory.weight": (100, 200),
    }
