"""What the model accepts reads back as the same policy, through every spelling
the store and the files use: for every field of the model."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

from tests.strategies import field_paths, model_documents
from virtpolicy.errors import PolicyError
from virtpolicy.policy.document import dump_json, dump_yaml, parse_documents
from virtpolicy.policy.model import GuestPolicy, parse_policy

DOCS = model_documents(GuestPolicy)
DEFAULTS = GuestPolicy(guest="x").model_dump()


def _at(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def reads_back(policy: GuestPolicy) -> None:
    """The stored text (canonical JSON), the document form, and the YAML and JSON
    files all read back as ``policy``; the canonical text is a fixed point."""
    stored = policy.canonical_json()
    assert GuestPolicy.model_validate_json(stored) == policy
    assert parse_policy(json.loads(stored)) == policy
    assert parse_policy(policy.to_document()) == policy
    assert parse_policy(yaml.safe_load(dump_yaml([policy]))) == policy
    [from_json] = parse_documents(dump_json([policy]).encode(), "x")
    assert from_json.policy == policy
    assert parse_policy(json.loads(stored)).canonical_json() == stored


def test_every_accepted_document_reads_back_equal() -> None:
    """For every accepted document of the strategy (which draws each field of the
    model, valid or next to valid) the policy reads back equal; and the run set
    every field of the model to a value other than its default at least once,
    so that a field added later is covered or this test says so."""
    seen: set[str] = set()
    paths = field_paths(GuestPolicy)

    @settings(
        max_examples=2000,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(DOCS)
    def check(doc: dict[str, Any]) -> None:
        try:
            policy = parse_policy(doc)
        except PolicyError:
            return
        reads_back(policy)
        dumped = policy.model_dump()
        seen.update(p for p in paths if _at(dumped, p) not in (_at(DEFAULTS, p), None))

    check()
    missing = sorted(set(paths) - seen)
    assert missing == [], missing
