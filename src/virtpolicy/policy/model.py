"""The policy of one guest, as stored and as written in policy files.

Values are immutable pydantic models. Field names follow libvirt's words
(``vcpupin``, ``emulatorpin``) and systemd's (``requires``, ``wants``); the
meaning of each is in DESIGN.md. cpusets and conditions are kept in their
canonical spelling, so two policies that mean the same are equal and serialize
to the same bytes.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from virtpolicy import loopguard
from virtpolicy.errors import PolicyError
from virtpolicy.policy.condition import normalize_condition
from virtpolicy.policy.cpuset import MAX_CPUS, CpuSet
from virtpolicy.policy.memory import MemoryPolicy
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.text import bad_text, not_text, printable, quoted

#: Relative CPU weight, on the cgroup v2 ``cpu.weight`` scale.
WEIGHT_MIN, WEIGHT_MAX = 1, 10000
#: Cap in percent of one host CPU; no host has more than MAX_CPUS CPUs.
CAP_MIN, CAP_MAX = 1, MAX_CPUS * 100
#: Longest wait for a dependency, and longest stop timeout or start delay.
TIMEOUT_MAX = 86400
#: ``cpu.vcpus: auto``: placed by a tuner.
AUTO = "auto"
DEFAULT_DEPENDENCY_TIMEOUT = 300
DEFAULT_STOP_TIMEOUT = 300

#: A label key, and the characters no label value may hold (the OpenAPI
#: document says the same with these).
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
CONTROL_RANGE = r"\x00-\x1f\x7f"
LABEL_VALUE_MAX = 255
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
_CONTROL = re.compile(f"[{CONTROL_RANGE}]")


def _cpuset(value: object) -> object:
    # YAML reads ``vcpus: 3`` as an integer; it is still a cpuset.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _read_once(value: str) -> str:
    """A cpuset's text, parsed here and only here, as a :class:`CpuSet` (its
    canonical spelling, with its CPUs). After pydantic's own string check, which
    hands back a plain copy of whatever came before it."""
    return CpuSet(value)


def _vcpus(value: str) -> str:
    return value if value == AUTO else _read_once(value)


def _condition(value: object) -> object:
    return normalize_condition(value) if isinstance(value, str) else value


def _vcpupin_keys(value: object) -> object:
    # JSON object keys are strings; vCPU numbers written as "1" are numbers.
    if isinstance(value, dict):
        return {_vcpu_key(k): v for k, v in value.items()}
    return value


def _vcpu_key(key: object) -> object:
    number = ascii_int(key, max_digits=6) if isinstance(key, str) else None
    return key if number is None else number


#: What may not start or end a guest name: the blanks ``str.strip()`` removes
#: that are not control characters (those are refused anywhere).
_EDGE_BLANKS = r"\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NAME_CHAR = "/" + CONTROL_RANGE
#: A guest name as a regular expression that Python, ECMAScript (the OpenAPI
#: document) and Rust read the same: 1 or more characters, no '/', no control
#: character, no blank at either end (the length, 1-255, is checked apart).
GUEST_NAME_PATTERN = (
    rf"^[^{_NAME_CHAR}{_EDGE_BLANKS}](?:[^{_NAME_CHAR}]*[^{_NAME_CHAR}{_EDGE_BLANKS}])?$"
)
_GUEST_NAME = re.compile(GUEST_NAME_PATTERN)
GUEST_NAME_MAX = 255


def check_guest_name(value: object, what: str = "guest") -> object:
    """Validate a libvirt domain name: 1-255 characters, no ``/``, no controls
    (a host's name in the fleet too, ``what="host"``)."""
    if not isinstance(value, str):
        return value
    if not value or len(value) > GUEST_NAME_MAX:
        raise PolicyError(f'"{value[:40]}" is not a {what} name: it must be 1-255 characters')
    if not _GUEST_NAME.fullmatch(value) or bad_text(value) is not None:
        raise PolicyError(
            f"{quoted(value, 80)} is not a {what} name: no '/', control characters or outer blanks"
        )
    return value


def _label_key(value: object) -> object:
    if isinstance(value, str) and not _LABEL_KEY.fullmatch(value):
        raise PolicyError(
            f'"{value}" is not a label key: 1-63 of letters, digits and ._/-, '
            "starting with a letter or digit"
        )
    return value


def _label_value(value: object) -> object:
    if isinstance(value, str) and (len(value) > LABEL_VALUE_MAX or _CONTROL.search(value)):
        raise PolicyError(
            f"{json.dumps(value[:40])} is not a label value: "
            "at most 255 characters, no control characters"
        )
    return value


#: A cpuset: validated and parsed once (a :class:`CpuSet`), dumped as plain text.
Cpuset = Annotated[
    str, BeforeValidator(_cpuset), AfterValidator(_read_once), PlainSerializer(str, return_type=str)
]
Condition = Annotated[str, BeforeValidator(_condition)]
GuestName = Annotated[str, BeforeValidator(check_guest_name)]
HostName = Annotated[str, BeforeValidator(lambda v: check_guest_name(v, "host"))]
LabelKey = Annotated[str, BeforeValidator(_label_key)]
LabelValue = Annotated[str, BeforeValidator(_label_value)]


VcpuIndex = Annotated[int, Field(ge=0, lt=MAX_CPUS)]
Seconds = Annotated[int, Field(ge=1, le=TIMEOUT_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CpuPolicy(_Model):
    """CPU tuning: where vCPUs and the emulator may run, and how much CPU."""

    vcpupin: Annotated[dict[VcpuIndex, Cpuset], BeforeValidator(_vcpupin_keys)] = {}
    #: A cpuset for every vCPU not pinned alone, or "auto": a tuner
    #: (``balance``) places each vCPU, within ``allowed``.
    vcpus: (
        Annotated[
            str,
            BeforeValidator(_cpuset),
            AfterValidator(_vcpus),
            PlainSerializer(str, return_type=str),
        ]
        | None
    ) = None
    allowed: Cpuset | None = None
    emulatorpin: Cpuset | None = None
    weight: Annotated[int, Field(ge=WEIGHT_MIN, le=WEIGHT_MAX)] | None = None
    cap: Annotated[int, Field(ge=CAP_MIN, le=CAP_MAX)] | None = None
    #: Host CPUs of its own (dedicated) or the shared pool (shared, the default).
    placement: Literal["shared", "dedicated"] = "shared"
    #: Dedicated: pack onto sibling threads, a whole core per vCPU, or vCPU pairs
    #: on sibling pairs.
    threads: Literal["prefer", "isolate", "require"] = "prefer"
    #: Dedicated: the emulator on the shared pool, or on one more CPU of its own.
    emulator: Literal["share", "isolate"] = "share"
    #: Dedicated: the guest's <cpu><topology> as its vCPUs really sit.
    topology: Literal["match"] | None = None

    @model_validator(mode="after")
    def _check_placement(self) -> CpuPolicy:
        if self.placement != "dedicated":
            for name, default in (("threads", "prefer"), ("emulator", "share")):
                if getattr(self, name) != default:
                    raise PolicyError("only with cpu.placement: dedicated", field=f"cpu.{name}")
            if self.topology is not None:
                raise PolicyError("only with cpu.placement: dedicated", field="cpu.topology")
            return self
        for name in ("vcpus", "emulatorpin"):
            if getattr(self, name) is not None:
                raise PolicyError(
                    "not with cpu.placement: dedicated, which chooses the host CPUs",
                    field=f"cpu.{name}",
                )
        if self.vcpupin:
            raise PolicyError(
                "not with cpu.placement: dedicated, which chooses the host CPUs",
                field="cpu.vcpupin",
            )
        return self

    @model_validator(mode="after")
    def _check_auto(self) -> CpuPolicy:
        if self.vcpus == AUTO and self.vcpupin:
            raise PolicyError(
                "not with cpu.vcpus: auto, which places every vCPU", field="cpu.vcpupin"
            )
        if self.allowed is not None and self.vcpus != AUTO:
            raise PolicyError("only with cpu.vcpus: auto", field="cpu.allowed")
        return self


class NumaPolicy(_Model):
    """Where the guest's vCPUs and memory sit among the host's NUMA nodes."""

    #: Its vCPUs within this many host nodes (None: as few as will do).
    nodes: Annotated[int, Field(ge=1, le=64)] | None = None
    #: Its memory bound to those nodes (<numatune>): strictly, preferably, or
    #: interleaved over them.
    memory: Literal["strict", "preferred", "interleave"] | None = None

    @model_validator(mode="after")
    def _check_memory(self) -> NumaPolicy:
        if self.memory is not None and self.nodes is None:
            raise PolicyError("only with numa.nodes", field="numa.memory")
        return self


class Dependency(_Model):
    """Another guest that must (``requires``) or should (``wants``) be up first."""

    guest: GuestName
    when: Condition = "running"
    timeout: Seconds = DEFAULT_DEPENDENCY_TIMEOUT


class StartPolicy(_Model):
    """How the guest is started by virtpolicy."""

    autostart: bool = False
    delay: Annotated[int, Field(ge=0, le=TIMEOUT_MAX)] = 0


class StopPolicy(_Model):
    """How the guest is stopped by virtpolicy."""

    timeout: Seconds = DEFAULT_STOP_TIMEOUT
    action: Literal["shutdown", "destroy", "managedsave"] = "shutdown"
    #: After a shutdown that times out, destroy the guest (else: report failure).
    escalate: bool = False
    #: When a guest this one ``requires`` stops or crashes: note it (none), or
    #: stop this guest too (stop).
    on_dependency_stop: Literal["none", "stop"] = "none"


class GuestPolicy(_Model):
    """Everything virtpolicy holds about one guest."""

    guest: GuestName
    cpu: CpuPolicy = CpuPolicy()
    numa: NumaPolicy = NumaPolicy()
    memory: MemoryPolicy = MemoryPolicy()
    # Lists in documents; tuples here so that a policy stays immutable.
    requires: Annotated[tuple[Dependency, ...], Field(strict=False)] = ()
    wants: Annotated[tuple[Dependency, ...], Field(strict=False)] = ()
    start: StartPolicy = StartPolicy()
    stop: StopPolicy = StopPolicy()
    labels: dict[LabelKey, LabelValue] = {}

    @model_validator(mode="after")
    def _check_dependencies(self) -> GuestPolicy:
        seen: dict[str, str] = {}
        for kind in ("requires", "wants"):
            deps: tuple[Dependency, ...] = getattr(self, kind)
            for i, dep in enumerate(deps):
                field = f"{kind}[{i}].guest"
                if dep.guest == self.guest:
                    raise PolicyError(f'"{dep.guest}" is the guest itself', field=field)
                if dep.guest in seen:
                    raise PolicyError(
                        f'"{dep.guest}" is already listed in {seen[dep.guest]}', field=field
                    )
                seen[dep.guest] = kind
        return self

    def dependencies(self) -> list[tuple[str, str]]:
        """``(guest, kind)`` for every dependency, kind ``requires`` or ``wants``."""
        return [(d.guest, "requires") for d in self.requires] + [
            (d.guest, "wants") for d in self.wants
        ]

    def to_document(self) -> dict[str, Any]:
        """The policy as a plain document, leaving out every field at its default.

        This is the shape of policy files and of ``policy get -o yaml``.
        """
        doc: dict[str, Any] = self.model_dump(mode="python", exclude_defaults=True)
        for kind in ("requires", "wants"):
            if kind in doc:
                doc[kind] = list(doc[kind])
        cpu = doc.get("cpu")
        if cpu and "vcpupin" in cpu:
            cpu["vcpupin"] = dict(sorted(cpu["vcpupin"].items()))
        if "labels" in doc:
            doc["labels"] = dict(sorted(doc["labels"].items()))
        return doc

    def canonical_json(self) -> str:
        """Compact, key-sorted JSON of :meth:`to_document`: equal policies, equal text."""
        return json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))


@loopguard.off_loop
def parse_policy(doc: object) -> GuestPolicy:
    """Validate a document into a policy, or raise one :class:`PolicyError`.

    The error's message is one line naming the field and the value, e.g.
    ``cpu.vcpupin[1]: "0-" is not a cpuset: range has no end (at 2)``.
    """
    why = not_text(doc)
    if why is not None:
        raise PolicyError(why)
    try:
        return GuestPolicy.model_validate(whole_numbers(doc))
    except ValidationError as exc:
        raise describe_validation_error(exc) from None
    except RecursionError:
        raise PolicyError("the document is nested too deeply to be a policy") from None


def whole_numbers(doc: Any) -> Any:
    """``doc`` with each float that is a whole number as an int: JSON has only
    numbers, and JSON Schema's integer is any number without a fraction (300.0)."""
    if isinstance(doc, float) and doc.is_integer():
        return int(doc)
    if isinstance(doc, dict):
        return {k: whole_numbers(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [whole_numbers(v) for v in doc]
    return doc


def describe_validation_error(exc: ValidationError) -> PolicyError:
    """The first error of ``exc`` as a :class:`PolicyError` (the rest are counted)."""
    errors = exc.errors()
    first = errors[0]
    field, message = _describe(first)
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    field, message = printable(field), printable(message)
    text = f"{field}: {message}{suffix}" if field else message + suffix
    return PolicyError(text, field=field or None)


# Our wording for pydantic's error types; {value} is the offending input.
_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "is required",
    "greater_than_equal": "{value} is below the minimum {bound}",
    "greater_than": "{value} must be greater than {bound}",
    "less_than_equal": "{value} is above the maximum {bound}",
    "less_than": "{value} must be less than {bound}",
    "literal_error": "{value} is not one of {expected}",
    "int_type": "{value} is not a whole number",
    "int_parsing": "{value} is not a whole number",
    "int_from_float": "{value} is not a whole number",
    "string_type": "{value} is not a string (quote it)",
    "bool_type": "{value} is not true or false",
    "bool_parsing": "{value} is not true or false",
    "dict_type": "{value} is not a mapping",
    "model_type": "{value} is not a mapping",
    "model_attributes_type": "{value} is not a mapping",
    "tuple_type": "{value} is not a list",
    "list_type": "{value} is not a list",
}

# Fields whose values are mappings: their keys print as [key], not as .key.
_MAPPINGS = frozenset({"vcpupin", "labels"})
_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def _describe(error: ErrorDetails) -> tuple[str, str]:
    loc = list(error["loc"])
    key_error = bool(loc) and loc[-1] == "[key]"
    if key_error:
        loc.pop()
    field = _field_path(loc)
    ctx = error.get("ctx") or {}
    value = _show(error["input"])
    inner = ctx.get("error")
    if isinstance(inner, PolicyError):
        field = inner.field or field
        message = str(inner)
    else:
        template = _MESSAGES.get(error["type"], "{value}: {msg}")
        bound = next((ctx[k] for k in ("ge", "gt", "le", "lt") if k in ctx), None)
        message = template.format(
            value=value, bound=bound, expected=ctx.get("expected"), msg=error["msg"]
        )
    if key_error and not isinstance(inner, PolicyError):
        message = f"key {message}"
    return field, message


def _field_path(loc: list[int | str]) -> str:
    path = ""
    for i, part in enumerate(loc):
        parent = loc[i - 1] if i else None
        if isinstance(part, int) or parent in _MAPPINGS:
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _show(value: object) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    return _SHORT.repr(value)
