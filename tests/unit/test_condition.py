"""Dependency conditions: parsing and canonical spelling."""

import pytest

from virtpolicy.errors import PolicyError
from virtpolicy.policy.condition import Condition, normalize_condition, parse_condition


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("running", Condition("running")),
        ("agent", Condition("agent")),
        ("tcp:db:5432", Condition("tcp", host="db", port=5432)),
        ("tcp:[::1]:80", Condition("tcp", host="::1", port=80)),
        ("exec:pg_isready -h db", Condition("exec", argv=("pg_isready", "-h", "db"))),
        ("exec:test -f '/run/a b'", Condition("exec", argv=("test", "-f", "/run/a b"))),
    ],
)
def test_parse_valid(text: str, parsed: Condition) -> None:
    """Each condition kind parses into its parts."""
    assert parse_condition(text) == parsed


@pytest.mark.parametrize(
    "text", ["running", "tcp:db:5432", "tcp:[::1]:80", "exec:test -f '/run/a b'", "agent"]
)
def test_canonical_roundtrip(text: str) -> None:
    """A canonical condition normalizes to itself."""
    assert normalize_condition(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http:x", 'unknown kind "http"'),
        ("tcp:db", "tcp needs HOST:PORT"),
        ("tcp::80", "tcp needs HOST:PORT"),
        ("tcp:db:0", 'port "0" is not 1-65535'),
        ("tcp:db:65536", 'port "65536" is not 1-65535'),
        ("tcp:db:http", 'port "http" is not 1-65535'),
        ("tcp:::1:80", "write an IPv6 host in brackets"),
        ("exec:", "exec needs a command"),
        ("exec:echo 'open", "No closing quotation"),
        ("running:now", "running takes no argument"),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    """Invalid conditions are refused with the text and what is wrong."""
    with pytest.raises(PolicyError) as info:
        parse_condition(text)
    assert str(info.value).startswith(f'"{text}" is not a condition: ')
    assert message in str(info.value)
