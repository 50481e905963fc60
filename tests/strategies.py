"""Hypothesis strategies for hostile input: arbitrary JSON and YAML documents,
some of them close to a real policy so that they reach deep into validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import strategies as st

#: Text that trips naive parsers: non-ASCII digits, controls, separators.
NASTY_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["²", "٣", "0-", "^", "-1", "1e9", "0x10", "", " ", "\x00", "tcp:db:²", "exec:"]
    ),
    st.from_regex(r"[0-9\-,^ ]{0,8}", fullmatch=True),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    NASTY_TEXT,
)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(NASTY_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)

FIELDS = {
    "cpu": ["vcpupin", "vcpus", "allowed", "emulatorpin", "weight", "cap"],
    "start": ["autostart", "delay"],
    "stop": ["timeout", "action", "escalate", "on_dependency_stop"],
}
TOP = ["guest", "cpu", "requires", "wants", "start", "stop", "labels"]


@st.composite
def policy_like(draw: st.DrawFn) -> dict[str, Any]:
    """A document with the policy's keys and arbitrary values under them."""
    doc: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP), unique=True, max_size=len(TOP))):
        if key in FIELDS and draw(st.booleans()):
            doc[key] = {
                f: draw(JSON_VALUES)
                for f in draw(st.lists(st.sampled_from(FIELDS[key]), unique=True))
            }
        elif key in ("requires", "wants") and draw(st.booleans()):
            doc[key] = draw(
                st.one_of(
                    st.lists(
                        st.dictionaries(st.sampled_from(["guest", "when", "timeout"]), JSON_VALUES),
                        max_size=3,
                    ),
                    st.dictionaries(NASTY_TEXT, JSON_VALUES, max_size=3),
                )
            )
        else:
            doc[key] = draw(JSON_VALUES)
    return doc


DOCUMENTS = st.one_of(JSON_VALUES, policy_like())


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def as_yaml(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


#: Raw bodies: JSON and YAML renderings of documents, and plain bytes.
BODIES = st.one_of(
    DOCUMENTS.map(as_json),
    DOCUMENTS.map(as_yaml),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"[" * 100_000 + b"]" * 100_000,
            b'{"guest": "a", "cpu": {"weight": ' + b"9" * 5000 + b"}}",
            b"guest: a\ncpu:\n  cap: " + b"9" * 5000 + b"\n",
        ]
    ),
)


def refusal(call: Callable[[], object], kind: type[Exception]) -> str | None:
    """The message of the ``kind`` error ``call()`` raises, or None if it succeeds; any
    other exception propagates (and fails the test)."""
    try:
        call()
    except kind as exc:
        return str(exc)
    return None
