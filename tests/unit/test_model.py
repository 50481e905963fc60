"""The policy model: validation messages, defaults and the canonical document."""

from typing import Any

import pytest

from virtpolicy.errors import PolicyError
from virtpolicy.policy.model import GuestPolicy, parse_policy


def test_minimal_policy_has_defaults() -> None:
    """A policy with only a guest name gets every default and an empty document."""
    policy = parse_policy({"guest": "web"})
    assert policy.cpu.weight is None
    assert policy.stop.action == "shutdown"
    assert policy.stop.timeout == 300
    assert policy.to_document() == {"guest": "web"}


def test_values_are_canonical() -> None:
    """cpusets and conditions are stored in their canonical spelling."""
    policy = parse_policy(
        {
            "guest": "web",
            "cpu": {"vcpupin": {"1": "0-3,^2", 0: 7}, "vcpus": 5, "emulatorpin": "1,0"},
            "requires": [{"guest": "db", "when": "tcp:[::1]:5432"}],
        }
    )
    assert policy.to_document() == {
        "guest": "web",
        "cpu": {"vcpupin": {0: "7", 1: "0-1,3"}, "vcpus": "5", "emulatorpin": "0-1"},
        "requires": [{"guest": "db", "when": "tcp:[::1]:5432"}],
    }


def test_equal_meaning_gives_equal_json() -> None:
    """Two spellings of one policy serialize to the same canonical JSON."""
    a = parse_policy(
        {"guest": "w", "cpu": {"vcpupin": {0: "0-3,^2"}}, "labels": {"b": "1", "a": "2"}}
    )
    b = parse_policy(
        {"guest": "w", "cpu": {"vcpupin": {"0": "0,1,3"}}, "labels": {"a": "2", "b": "1"}}
    )
    assert a.canonical_json() == b.canonical_json()
    assert GuestPolicy.model_validate_json(a.canonical_json()) == a


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"guest": "web", "cpu": {"vcpupin": {1: "0-"}}},
        'cpu.vcpupin[1]: "0-" is not a cpuset: range has no end (at 2)',
    ),
    (
        {"guest": "web", "cpu": {"vcpus": "1-x"}},
        'cpu.vcpus: "1-x" is not a cpuset: range has no end (at 2)',
    ),
    (
        {"guest": "web", "cpu": {"emulatorpin": ""}},
        'cpu.emulatorpin: "" is not a cpuset: it is empty (at 0)',
    ),
    (
        {"guest": "web", "cpu": {"vcpupin": {"x": "1"}}},
        'cpu.vcpupin[x]: key "x" is not a whole number',
    ),
    (
        {"guest": "web", "cpu": {"vcpupin": {-1: "1"}}},
        "cpu.vcpupin[-1]: key -1 is below the minimum 0",
    ),
    ({"guest": "web", "cpu": {"weight": 0}}, "cpu.weight: 0 is below the minimum 1"),
    ({"guest": "web", "cpu": {"weight": -5}}, "cpu.weight: -5 is below the minimum 1"),
    ({"guest": "web", "cpu": {"weight": 10001}}, "cpu.weight: 10001 is above the maximum 10000"),
    (
        {"guest": "web", "cpu": {"weight": 10**30}},
        f"cpu.weight: {10**30} is above the maximum 10000",
    ),
    ({"guest": "web", "cpu": {"weight": "heavy"}}, 'cpu.weight: "heavy" is not a whole number'),
    ({"guest": "web", "cpu": {"weight": True}}, "cpu.weight: True is not a whole number"),
    ({"guest": "web", "cpu": {"weight": 1.5}}, "cpu.weight: 1.5 is not a whole number"),
    ({"guest": "web", "cpu": {"cap": 0}}, "cpu.cap: 0 is below the minimum 1"),
    ({"guest": "web", "cpu": {"cap": -100}}, "cpu.cap: -100 is below the minimum 1"),
    ({"guest": "web", "cpu": {"cap": 10**9}}, "cpu.cap: 1000000000 is above the maximum 1638400"),
    (
        {"guest": "web", "requires": [{"guest": "db", "when": "http:db"}]},
        'requires[0].when: "http:db" is not a condition: unknown kind "http" '
        "(running, tcp:HOST:PORT, exec:COMMAND, agent)",
    ),
    (
        {"guest": "web", "wants": [{"guest": "db", "when": "tcp:db"}]},
        'wants[0].when: "tcp:db" is not a condition: tcp needs HOST:PORT',
    ),
    (
        {"guest": "web", "requires": [{"guest": "db", "timeout": 0}]},
        "requires[0].timeout: 0 is below the minimum 1",
    ),
    (
        {"guest": "web", "requires": [{"guest": "web"}]},
        'requires[0].guest: "web" is the guest itself',
    ),
    ({"guest": "web", "wants": [{"guest": "web"}]}, 'wants[0].guest: "web" is the guest itself'),
    (
        {"guest": "web", "requires": [{"guest": "db"}], "wants": [{"guest": "db"}]},
        'wants[0].guest: "db" is already listed in requires',
    ),
    (
        {"guest": "web", "requires": [{"guest": "db"}, {"guest": "db"}]},
        'requires[1].guest: "db" is already listed in requires',
    ),
    ({"guest": "web", "cpu": {"wieght": 3}}, "cpu.wieght: unknown field"),
    ({"guest": "web", "color": "red"}, "color: unknown field"),
    (
        {"guest": "web", "stop": {"action": "kill"}},
        "stop.action: \"kill\" is not one of 'shutdown', 'destroy' or 'managedsave'",
    ),
    (
        {"guest": "web", "start": {"autostart": "yes"}},
        'start.autostart: "yes" is not true or false',
    ),
    ({"guest": "web", "labels": {"tier": 1}}, "labels[tier]: 1 is not a string (quote it)"),
    (
        {"guest": "web", "labels": {"-x": "1"}},
        'labels[-x]: "-x" is not a label key: 1-63 of letters, digits and ._/-, '
        "starting with a letter or digit",
    ),
    (
        {"guest": "a/b"},
        "guest: \"a/b\" is not a guest name: no '/', control characters or outer blanks",
    ),
    ({"guest": ""}, 'guest: "" is not a guest name: it must be 1-255 characters'),
    ({"cpu": {}}, "guest: is required"),
    ({"guest": "web", "requires": "db"}, 'requires: "db" is not a list'),
    (
        {"guest": "web", "cpu": {"weight": 0, "cap": 0}},
        "cpu.weight: 0 is below the minimum 1 (and 1 more error)",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_invalid_policy_message(doc: dict[str, Any], message: str) -> None:
    """Each invalid policy gets one line naming the field and the value."""
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_error_keeps_the_field() -> None:
    """The error carries the field path for machine consumers."""
    with pytest.raises(PolicyError) as info:
        parse_policy({"guest": "web", "requires": [{"guest": "web"}]})
    assert info.value.field == "requires[0].guest"


def test_huge_value_is_shortened_in_message() -> None:
    """A long wrong value does not blow up the one-line message."""
    with pytest.raises(PolicyError) as info:
        parse_policy({"guest": "web", "cpu": {"weight": "x" * 10_000}})
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"cpu": {"threads": "isolate"}}, "cpu.threads: only with cpu.placement: dedicated"),
        ({"cpu": {"emulator": "isolate"}}, "cpu.emulator: only with cpu.placement: dedicated"),
        ({"cpu": {"topology": "match"}}, "cpu.topology: only with cpu.placement: dedicated"),
        (
            {"cpu": {"placement": "dedicated", "vcpus": "0-3"}},
            "cpu.vcpus: not with cpu.placement: dedicated, which chooses the host CPUs",
        ),
        (
            {"cpu": {"placement": "dedicated", "vcpupin": {"0": "1"}}},
            "cpu.vcpupin: not with cpu.placement: dedicated, which chooses the host CPUs",
        ),
        ({"numa": {"memory": "strict"}}, "numa.memory: only with numa.nodes"),
        ({"numa": {"nodes": 0}}, "numa.nodes: 0 is below the minimum 1"),
        ({"cpu": {"threads": "loose", "placement": "dedicated"}}, "cpu.threads: "),
    ],
)
def test_placement_fields_are_checked(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({"guest": "web", **doc})
    assert str(caught.value).startswith(message)


def test_placement_fields_round_trip_and_stay_out_when_default() -> None:
    doc = {
        "guest": "web",
        "cpu": {"placement": "dedicated", "threads": "isolate", "emulator": "isolate",
                "topology": "match"},
        "numa": {"nodes": 1, "memory": "strict"},
    }  # fmt: skip
    policy = parse_policy(doc)
    assert policy.to_document() == doc
    assert parse_policy({"guest": "web", "cpu": {"placement": "shared"}}).to_document() == {
        "guest": "web"
    }
