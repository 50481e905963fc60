"""cpuset parsing and formatting in libvirt's syntax."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.errors import CpusetError
from virtpolicy.policy.cpuset import MAX_CPUS, format_cpuset, normalize_cpuset, parse_cpuset


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0", {0}),
        ("0-3", {0, 1, 2, 3}),
        ("0-3,^2,8", {0, 1, 3, 8}),
        ("^2,0-3", {0, 1, 2, 3}),
        ("0-7,^2-5", {0, 1, 6, 7}),
        (" 1 , 3 - 4 ", {1, 3, 4}),
        ("5,5,5", {5}),
        (f"{MAX_CPUS - 1}", {MAX_CPUS - 1}),
    ],
)
def test_parse_valid(text: str, cpus: set[int]) -> None:
    """Valid cpusets select the CPUs libvirt would, items applied in order."""
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("", "it is empty", 0),
        ("0-", "range has no end", 2),
        ("0-,3", "range has no end", 2),
        ("3-1", "range 3-1 runs backwards", 1),
        ("a", "expected a CPU number, found 'a'", 0),
        ("1,", "expected a CPU number, found the end", 2),
        ("1,,2", "expected a CPU number, found ','", 2),
        ("1;2", "unexpected ';'", 1),
        ("-1", "expected a CPU number, found '-'", 0),
        ("0,^0", "it selects no CPU", 0),
        (str(MAX_CPUS), f"CPU {MAX_CPUS} is beyond libvirt's limit of {MAX_CPUS} CPUs", 0),
        ("1-99999999999", "CPU 99999999999 is beyond libvirt's limit of 16384 CPUs", 2),
    ],
)
def test_parse_invalid(text: str, reason: str, position: int) -> None:
    """Each malformed cpuset is refused with the text, the reason and the position."""
    with pytest.raises(CpusetError) as info:
        parse_cpuset(text)
    assert info.value.reason == reason
    assert info.value.position == position
    assert str(info.value) == f'"{text}" is not a cpuset: {reason} (at {position})'


def test_format_merges_ranges() -> None:
    """Formatting writes ascending ranges with no exclusions."""
    assert format_cpuset({8, 0, 1, 3, 2, 10, 11}) == "0-3,8,10-11"
    assert normalize_cpuset("0-3,^2,8") == "0-1,3,8"


cpu_sets = st.frozensets(st.integers(min_value=0, max_value=MAX_CPUS - 1), min_size=1, max_size=64)


@given(cpu_sets)
def test_roundtrip_set(cpus: frozenset[int]) -> None:
    """parse(format(s)) gives back exactly s."""
    assert parse_cpuset(format_cpuset(cpus)) == cpus


@given(cpu_sets)
def test_canonical_form_is_a_fixed_point(cpus: frozenset[int]) -> None:
    """The canonical spelling normalizes to itself."""
    text = format_cpuset(cpus)
    assert normalize_cpuset(text) == text


@given(st.text(alphabet="0123456789,-^ x", max_size=20))
def test_parser_never_crashes(text: str) -> None:
    """Any text either parses to a non-empty set or raises CpusetError."""
    outcome: frozenset[int] | CpusetError
    try:
        outcome = parse_cpuset(text)
    except CpusetError as exc:
        outcome = exc
    if isinstance(outcome, CpusetError):
        assert 0 <= outcome.position <= len(text)
    else:
        assert outcome


def test_a_cpuset_is_bounded_in_length() -> None:
    """A cpuset over 4096 characters is refused at once, naming the limit (a 200 kB
    one, "0-16383," 25,000 times, cost 16 s of the event loop); within the
    limit every item costs the same whatever its range."""
    from virtpolicy.policy.cpuset import MAX_CPUSET_CHARS  # noqa: PLC0415

    with pytest.raises(CpusetError, match="200000 characters is over the limit of 4096"):
        parse_cpuset("0-16383," * 25000)
    longest = ",".join(["0-16383"] * (MAX_CPUSET_CHARS // 8))
    assert len(longest) <= MAX_CPUSET_CHARS
    assert parse_cpuset(longest) == frozenset(range(16384))
    assert parse_cpuset("0-16383,^1-16382") == frozenset({0, 16383})
