"""Partial changes to a policy: what ``policy set`` and a PATCH request do.

A patch is a JSON merge patch (RFC 7386) over the policy document, with one
twist: ``requires`` and ``wants`` are addressed as maps from guest name to
the rest of the dependency, so that a patch adds, replaces or (with null)
removes one dependency without restating the others. Example::

    {"cpu": {"weight": 200, "vcpupin": {"1": "3"}, "cap": None},
     "requires": {"db": {"when": "tcp:db:5432"}}, "labels": {"tier": None}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel

from virtpolicy.errors import PolicyError
from virtpolicy.policy.model import GuestPolicy, parse_policy
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.text import printable, quoted

_KEYED = ("requires", "wants")


def _is_dict(annotation: Any) -> bool:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_origin(annotation) is dict


# Read from the model itself: a field added there can be set and cleared at once.
#: The policy's sections (``cpu``, ``numa``, ...) and their fields.
_FIELDS: dict[str, set[str]] = {
    name: set(info.annotation.model_fields)
    for name, info in GuestPolicy.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
}
#: Fields whose values are maps (and the dependencies, kept by guest): cleared
#: whole or one key at a time.
_MAPS: set[str] = {
    *_KEYED,
    *(name for name, info in GuestPolicy.model_fields.items() if _is_dict(info.annotation)),
    *(
        f"{section}.{name}"
        for section in _FIELDS
        for name, info in GuestPolicy.model_fields[section].annotation.model_fields.items()  # type: ignore[union-attr]
        if _is_dict(info.annotation)
    ),
}


def merged_policy(current: GuestPolicy | None, guest: str, patch: Mapping[str, Any]) -> GuestPolicy:
    """Apply ``patch`` to ``current`` (or to an empty policy for ``guest``)."""
    _check_known(patch)
    _check_keyed(patch)
    if "guest" in patch and patch["guest"] != guest:
        shown = quoted(patch["guest"]) if isinstance(patch["guest"], str) else "it"
        raise PolicyError(
            f"guest: {shown} is not the guest patched ({quoted(guest)})", field="guest"
        )
    doc: dict[str, Any] = current.to_document() if current else {"guest": guest}
    for kind in _KEYED:
        doc[kind] = {
            d["guest"]: {k: v for k, v in d.items() if k != "guest"} for d in doc.get(kind, ())
        }
    merged = _merge(_str_vcpus(doc), _str_vcpus(patch))
    for kind in _KEYED:
        merged[kind] = [{**rest, "guest": g} for g, rest in merged.get(kind, {}).items()]
    merged["guest"] = guest
    return parse_policy(merged)


def _check_known(patch: Mapping[str, Any]) -> None:
    """Every key of a patch names a field of the model: one that does not is
    refused, even with null (which would remove nothing, silently)."""
    for key, value in patch.items():
        if key not in GuestPolicy.model_fields:
            raise PolicyError(f"{printable(str(key)[:60])}: unknown field", field=str(key)[:60])
        for sub in value if key in _FIELDS and isinstance(value, Mapping) else ():
            if sub not in _FIELDS[key]:
                where = f"{key}.{printable(str(sub)[:60])}"
                raise PolicyError(f"{where}: unknown field", field=where)


def _check_keyed(patch: Mapping[str, Any]) -> None:
    """``requires`` and ``wants`` in a patch are maps: guest -> the rest, or null."""
    for kind in _KEYED:
        value = patch.get(kind)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise PolicyError(
                f"{kind}: a patch gives a map of guest to dependency (or null), "
                f"not {type(value).__name__}",
                field=kind,
            )
        for guest, rest in value.items():
            if rest is not None and not isinstance(rest, Mapping):
                where = f"{kind}.{printable(str(guest)[:40])}"
                raise PolicyError(
                    f'{where}: a dependency is a map such as {{"when": '
                    f'"running"}} (or null to remove it), not {type(rest).__name__}',
                    field=where,
                )


def clear_path(path: str) -> dict[str, Any]:
    """The patch that removes the field at ``path``.

    Paths: ``cpu.weight``, ``cpu.vcpupin``, ``cpu.vcpupin.1``, ``requires``,
    ``requires.db``, ``labels``, ``labels.tier``, ``start.delay``, ...
    Map keys may themselves contain dots (``labels.app.example.com/tier``).
    """
    head, _, rest = path.partition(".")
    if head in ("labels", *_KEYED):
        return {head: {rest: None} if rest else None}
    if head in _FIELDS and rest:
        field, _, key = rest.partition(".")
        if field in _FIELDS[head] and (not key or f"{head}.{field}" in _MAPS):
            return {head: {field: {key: None} if key else None}}
    raise PolicyError(
        f'"{path}" is not a field to clear '
        "(e.g. cpu.weight, cpu.vcpupin.1, requires.db, labels.tier)",
        field="clear",
    )


def dependency_patch(spec: str, option: str) -> dict[str, Any]:
    """``GUEST[@WHEN]`` (as given to ``--requires``) as a keyed patch entry."""
    guest, sep, when = spec.partition("@")
    if not guest:
        raise PolicyError(f'{option}: "{spec}" is not GUEST[@WHEN]', field=option)
    return {guest: {"when": when} if sep else {}}


def vcpupin_patch(spec: str) -> dict[int, str]:
    """``VCPU:CPUSET`` (as given to ``--vcpupin``) as a patch entry."""
    vcpu_text, sep, cpuset = spec.partition(":")
    vcpu = ascii_int(vcpu_text.strip(), max_digits=6)
    if not sep or vcpu is None or not cpuset.strip():
        raise PolicyError(
            f'--vcpupin: "{spec}" is not VCPU:CPUSET (e.g. 0:2-3)', field="cpu.vcpupin"
        )
    return {vcpu: cpuset.strip()}


def merge_patches(*patches: Mapping[str, Any]) -> dict[str, Any]:
    """Several patches as one, later ones winning."""
    out: dict[str, Any] = {}
    for patch in patches:
        out = _merge(out, patch, keep_nulls=True)
    return out


def _str_vcpus(doc: Mapping[str, Any]) -> dict[str, Any]:
    # vCPU numbers arrive as int (documents) or str (paths, JSON): one spelling.
    out = dict(doc)
    cpu = out.get("cpu")
    if isinstance(cpu, Mapping) and isinstance(cpu.get("vcpupin"), Mapping):
        out["cpu"] = {**cpu, "vcpupin": {str(k): v for k, v in cpu["vcpupin"].items()}}
    return out


def _merge(
    target: Mapping[str, Any], patch: Mapping[str, Any], *, keep_nulls: bool = False
) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None and not keep_nulls:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = _merge(
                base if isinstance(base, Mapping) else {}, value, keep_nulls=keep_nulls
            )
        else:
            out[key] = value
    return out
