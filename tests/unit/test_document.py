"""Policy files: YAML and JSON documents, and what is refused."""

import pytest
from hypothesis import HealthCheck, given, settings

from tests.strategies import BODIES, refusal
from virtpolicy.errors import DocumentError
from virtpolicy.policy.document import (
    MAX_FILE_BYTES,
    check_unique,
    dump_json,
    dump_yaml,
    parse_documents,
)

TWO = b"guest: db\n---\nguest: web\nrequires:\n  - guest: db\n"


def test_yaml_stream() -> None:
    """Each YAML document is one policy, numbered from 1."""
    docs = parse_documents(TWO, "a.yaml")
    assert [(d.policy.guest, d.index) for d in docs] == [("db", 1), ("web", 2)]


def test_json_array_and_object() -> None:
    """JSON is one object or an array of them."""
    assert [d.policy.guest for d in parse_documents(b'[{"guest": "a"}, {"guest": "b"}]', "x")] == [
        "a",
        "b",
    ]
    assert [d.policy.guest for d in parse_documents(b'{"guest": "a"}', "x")] == ["a"]


def test_dumps_parse_back() -> None:
    """What dump_yaml and dump_json write, parse_documents reads back unchanged."""
    policies = [d.policy for d in parse_documents(TWO, "a")]
    for text in (dump_yaml(policies), dump_json(policies)):
        assert [d.policy for d in parse_documents(text.encode(), "b")] == policies


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "f.yaml: holds no policy documents"),
        (b"   \n# only a comment\n", "f.yaml: holds no policy documents"),
        (b"---\n---\n", "f.yaml: holds no policy documents"),
        (b"[]", "f.yaml: holds no policy documents"),
        (b"guest: web\n\xff\xfe\n", "f.yaml: not UTF-8 text (byte 0xff at offset 11)"),
        (b"guest: [web\n", "f.yaml: not valid YAML: "),
        (b'{"guest": ', "f.yaml: not valid JSON: Expecting value (line 1, column 11)"),
        (b"- 1\n- 2\n", "f.yaml, document 1: 1 is not a mapping"),  # a list of policies
        (b"guest: web\ncolour: red\n", "f.yaml, document 1 (web): colour: unknown field"),
        (
            b"guest: a\n---\nguest: b\ncpu: {weight: 0}\n",
            "f.yaml, document 2 (b): cpu.weight: 0 is below the minimum 1",
        ),
        (
            b"x: &a [1]\ny: *a\n",
            "f.yaml, document 1: YAML aliases (*name) are not allowed in policies",
        ),
    ],
)
def test_refused(data: bytes, message: str) -> None:
    """Files that are not policy documents are refused with one line naming the file."""
    with pytest.raises(DocumentError) as info:
        parse_documents(data, "f.yaml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_over_the_size_limit() -> None:
    """Bytes over the limit are refused before any parsing."""
    with pytest.raises(DocumentError, match="over the limit of 8 MiB"):
        parse_documents(b"#" * (MAX_FILE_BYTES + 1), "big.yaml")


def test_duplicate_guests_name_both_places() -> None:
    """The same guest twice, even across files, names both documents."""
    docs = parse_documents(TWO, "a.yaml") + parse_documents(b"guest: web\n", "b.yaml")
    with pytest.raises(DocumentError) as info:
        check_unique(docs)
    assert str(info.value) == 'guest "web" appears twice: a.yaml, document 2 and b.yaml, document 1'


def test_empty_documents_are_skipped_but_counted() -> None:
    """Empty YAML documents are skipped; later documents keep their numbers."""
    docs = parse_documents(b"---\n---\nguest: a\n---\n\n---\nguest: b\n", "x")
    assert [(d.policy.guest, d.index) for d in docs] == [("a", 2), ("b", 4)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES)
def test_any_bytes_are_policies_or_one_refusal(data: bytes) -> None:
    """Arbitrary JSON, YAML or bytes give policies or one DocumentError line, never another exception."""
    message = refusal(lambda: parse_documents(data, "f.yaml"), DocumentError)
    assert message is None or (message.startswith("f.yaml") and "\n" not in message)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"guest": "a", "cpu": {"weight": ' + b"9" * 5000 + b"}}", "Exceeds the limit"),
        (b"guest: a\ncpu:\n  weight: " + b"9" * 5000 + b"\n", "Exceeds the limit"),
        (b"guest: a\nrequires:\n  - guest: db\n    when: tcp:db:\xc2\xb2\n", "port"),
        # Duplicate keys were merged, the last one winning; now neither does.
        (b'{"guest": "a", "guest": "b"}', 'the key "guest" appears twice in one object'),
        (b'{"guest": "a", "cpu": {"weight": 1, "weight": 2}}', '"weight" appears twice'),
        (b"guest: a\nguest: b\n", 'the key "guest" appears twice in one mapping'),
        (b"guest: a\nlabels: {x: 1, x: 2}\n", '"x" appears twice'),
        # A lone surrogate from an escape is not text: nothing could store it.
        (b'{"guest": "x\\ud800"}', "is not text: a lone surrogate .\\\\ud800"),
        (b'{"guest": "a", "labels": {"k\\udfff": "v"}}', "a lone surrogate .\\\\udfff"),
        (b'guest: "x\\ud800"\n', "invalid Unicode character escape|lone surrogate"),
        (b'[{"guest": "a", "requires": [{"guest": "\\udc00"}]}]', "a lone surrogate"),
        (b'\xff\xfe{\x00"\x00}\x00', "not UTF-8 text"),
    ],
)
def test_hostile_documents_are_refused_in_one_line(data: bytes, problem: str) -> None:
    """Deep nesting, 5,000-digit integers and non-ASCII port digits are refusals naming the problem."""
    with pytest.raises(DocumentError, match=problem) as err:
        parse_documents(data, "f")
    assert "\n" not in str(err.value)
