"""What changed between two versions of a policy.

Two views: :func:`field_changes`, one short entry per changed field for
history lines and API consumers (``cpu.weight: 100 -> 200``), and
:func:`unified_diff`, a unified diff of the YAML documents for people, the
way ``kubectl diff`` shows it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtpolicy.policy.document import dump_yaml
from virtpolicy.policy.model import GuestPolicy

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's old and new value; ``None`` on a side means absent."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        if self.old is None:
            return f"+{self.path}={_show(self.new)}"
        if self.new is None:
            return f"-{self.path}"
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"


def flatten(policy: GuestPolicy | None) -> dict[str, Any]:
    """Leaf fields of a policy by dotted path; dependencies keyed by guest."""
    if policy is None:
        return {}
    out: dict[str, Any] = {}
    doc = policy.to_document()
    for kind in ("requires", "wants"):
        for dep in doc.pop(kind, ()):
            rest = {k: v for k, v in dep.items() if k != "guest"}
            out[f"{kind}.{dep['guest']}"] = _condition_text(rest)
    _flatten_into(out, "", doc)
    out.pop("guest", None)
    return out


def field_changes(old: GuestPolicy | None, new: GuestPolicy | None) -> list[FieldChange]:
    """Changes from ``old`` to ``new``, in path order (``None``: no policy)."""
    before, after = flatten(old), flatten(new)
    changes = []
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a != b:
            changes.append(FieldChange(path, a, b))
    return changes


def summarize(old: GuestPolicy | None, new: GuestPolicy | None) -> str:
    """One line for a history entry: the changes, comma separated."""
    if new is None:
        return "deleted"
    changes = field_changes(old, new)
    if old is None and not changes:
        return "created (all defaults)"
    text = ", ".join(str(c) for c in changes)
    return ("created: " + text) if old is None else (text or "no change")


def unified_diff(
    old: GuestPolicy | None, new: GuestPolicy | None, old_label: str, new_label: str
) -> str:
    """A unified diff of the two policies' YAML (empty when they are equal)."""
    a = dump_yaml([old]).splitlines(keepends=True) if old else []
    b = dump_yaml([new]).splitlines(keepends=True) if new else []
    return "".join(difflib.unified_diff(a, b, old_label, new_label))


def _flatten_into(out: dict[str, Any], prefix: str, value: Mapping[str, Any]) -> None:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            _flatten_into(out, path + ".", item)
        else:
            out[path] = item


def _condition_text(rest: Mapping[str, Any]) -> str:
    when = rest.get("when", "running")
    timeout = rest.get("timeout")
    return when if timeout is None else f"{when} (timeout {timeout}s)"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)
