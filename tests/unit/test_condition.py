"""Dependency conditions: parsing and canonical spelling."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.errors import PolicyError
from virtpolicy.policy.condition import Condition, normalize_condition, parse_condition
from virtpolicy.policy.text import quoted


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
        # Each of these was accepted once, and killed the daemon's prober or
        # was stored in a spelling that no longer validated.
        ("tcp:" + "a" * 64 + ":80", "is neither a DNS name"),
        ("tcp:a..b:80", "is neither a DNS name"),
        ("tcp:a\x00b:80", "is neither a DNS name"),
        ("tcp:[[]]:80", "in brackets is not an IPv6 address"),
        ("tcp:[]:80", "in brackets is not an IPv6 address"),
        ("tcp:[db]:80", "in brackets is not an IPv6 address"),
        ("tcp:-db:80", "is neither a DNS name"),
        ("tcp:db-:80", "is neither a DNS name"),
        ("tcp:1.2.3.999:80", "is neither a DNS name"),
        ("tcp:caf\u00e9.example:80", "is neither a DNS name"),
        ("tcp:" + ".".join(["a" * 60] * 5) + ":80", "is neither a DNS name"),
        ("exec:echo a\x00b", "control characters in the command"),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    """Invalid conditions are refused with the text and what is wrong."""
    with pytest.raises(PolicyError) as info:
        parse_condition(text)
    assert str(info.value).startswith(f"{quoted(text, 200)} is not a condition: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tcp:db.example.:5432", "tcp:db.example.:5432"),
        ("tcp:10.0.0.5:5432", "tcp:10.0.0.5:5432"),
        ("tcp:[0:0::1]:80", "tcp:[::1]:80"),
        ("tcp:my_host:80", "tcp:my_host:80"),
        ("tcp:" + "a" * 63 + ":80", "tcp:" + "a" * 63 + ":80"),
    ],
)
def test_hosts_accepted(text: str, canonical: str) -> None:
    """DNS names and IP literals are accepted; an IPv6 address in its canonical spelling."""
    assert normalize_condition(text) == canonical


@given(st.text(max_size=80))
def test_normalized_is_a_fixed_point(text: str) -> None:
    """Whatever text is accepted, its canonical spelling parses to the same condition
    and spells itself: what is stored is exactly what validates."""
    try:
        parsed = parse_condition(text)
    except PolicyError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert "\n" not in refusal
        return
    assert parse_condition(str(parsed)) == parsed
    assert normalize_condition(str(parsed)) == str(parsed)


@given(st.from_regex(r"tcp:\[?[a-z0-9.:\[\]_-]{0,70}\]?:[0-9]{1,5}", fullmatch=True))
def test_tcp_hosts_round_trip(text: str) -> None:
    """Host-like tcp conditions, where the bug was: accepted ones are fixed points."""
    test_normalized_is_a_fixed_point.hypothesis.inner_test(text)  # type: ignore[attr-defined]
