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
        [
            *["²", "٣", "0-", "^", "-1", "1e9", "0x10", "", " ", "\x00", "tcp:db:²", "exec:"],
            # An argument that was not UTF-8 (its bytes as lone surrogates), a
            # lone surrogate from a JSON escape, digits int() reads and we don't.
            *["\udcff", "x\ud800", "٣٠٠", "1_000", " 7 ", "+5"],
        ]
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


# -- documents over every field of the model, most of them valid ------------------

#: Text for the fields whose strings have a syntax of their own, by field name:
#: the forms that are valid and those next to them.
_VALID_CPUSETS = st.one_of(
    st.integers(0, 99).map(str),
    st.sampled_from(["0-3,^2", "2,4-5", " 1 , 3 ", "16383", "^1,0-2"]),
)
CPUSET_TEXT = st.one_of(
    _VALID_CPUSETS,
    _VALID_CPUSETS,
    st.from_regex(
        r"\^?[0-9]{1,3}(-[0-9]{1,3})?(,\^?[0-9]{1,5}(-[0-9]{1,3})?){0,3}", fullmatch=True
    ),
    st.sampled_from(["16384", "0-", "", "^1", "3-1"]),
)
HOST_TEXT = st.one_of(
    st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9-]{1,8}){0,3}\.?", fullmatch=True),
    st.from_regex(r"\[[0-9a-f:]{2,12}\]", fullmatch=True),
    st.sampled_from(["10.0.0.5", "[::1]", "[[]]", "a..b", "a" * 64, "[db]", "1.2.3.999"]),
)
CONDITION_TEXT = st.one_of(
    st.sampled_from(["running", "agent", "running:x", "exec:", "exec:'x"]),
    st.builds(lambda h, p: f"tcp:{h}:{p}", HOST_TEXT, st.integers(0, 70000)),
    st.builds(
        lambda argv: "exec:" + " ".join(argv),
        st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=6), max_size=3),
    ),
)
NAME_TEXT = st.one_of(
    st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
)
LABEL_KEY_TEXT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,8}", fullmatch=True)
SIZE_TEXT = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(1, 4096), st.sampled_from("MGmg")),
    st.sampled_from(["1.5G", "512MiB", " 2 G ", "1024", "1GB", "0M", "65T", "1.0000001G", "1K"]),
)
_TEXT_BY_FIELD: dict[str, st.SearchStrategy[Any]] = {
    "floor": SIZE_TEXT,
    "soft_limit": SIZE_TEXT,
    "vcpus": st.one_of(CPUSET_TEXT, st.just("auto")),
    "allowed": CPUSET_TEXT,
    "emulatorpin": CPUSET_TEXT,
    "guest": NAME_TEXT,
    "when": CONDITION_TEXT,
}


def _mostly(valid: st.SearchStrategy[Any], near: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four: a document of many fields is then often accepted."""
    return st.one_of(valid, valid, valid, near)


def _for_annotation(  # noqa: PLR0912  (one case per kind of annotation)
    name: str, annotation: Any, bounds: tuple[int, int] = (0, 20000)
) -> Any:
    """Values for one field of the model, found from its annotation."""
    import types  # noqa: PLC0415
    import typing  # noqa: PLC0415

    from pydantic import BaseModel  # noqa: PLC0415

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        low, high = bounds
        metas = [m for a in args[1:] for m in (getattr(a, "metadata", None) or [a])]
        for meta in metas:
            low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
            high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
            if getattr(meta, "lt", None) is not None:
                high = meta.lt - 1
        return _for_annotation(name, args[0], (low, high))
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for_annotation(name, a, bounds) for a in args))
    if origin is typing.Literal:
        # The default is mostly the first: drawn last, as Hypothesis favours the first.
        return _mostly(st.sampled_from(args[::-1]), st.sampled_from(["", "x"]))
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low, high = bounds
        return _mostly(st.integers(low, high), st.sampled_from([low - 1, high + 1]))
    if annotation is str:
        return _TEXT_BY_FIELD.get(name, st.text(st.characters(codec="utf-8"), max_size=12))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if name == "cpu":  # fields valid only together: often drawn together
            return _cpu_documents(annotation)
        if name == "numa":
            return st.one_of(
                model_documents(annotation, only=("memory",), given={"nodes": 2}),
                model_documents(annotation),
            )
        if name == "memory":
            return st.one_of(
                model_documents(
                    annotation,
                    only=("weight", "free_page_reporting", "soft_limit"),
                    given={"balloon": "auto", "floor": "1G"},
                ),
                model_documents(annotation),
            )
        return model_documents(annotation)
    if origin is dict and name == "vcpupin":
        keys = _mostly(st.integers(0, 8), st.sampled_from(["1", "x"]))
        return st.dictionaries(keys, CPUSET_TEXT, min_size=1, max_size=3)
    if origin is dict and name == "labels":
        values = st.text(st.characters(codec="utf-8"), max_size=8)
        return st.dictionaries(LABEL_KEY_TEXT, values, max_size=3)
    if origin is tuple:
        return st.lists(_for_annotation(name, args[0]), max_size=2)
    raise AssertionError(f"no strategy for the field {name}: {annotation!r}; add one here")


def _cpu_documents(model: Any) -> st.SearchStrategy[dict[str, Any]]:
    """CPU documents of each kind (fixed pins, placed by a tuner, dedicated), and
    of any fields at all, which mostly mix kinds and are refused."""
    shared = ("weight", "cap")
    kinds = [
        model_documents(
            model,
            only=("threads", "emulator", "topology", *shared),
            given={"placement": "dedicated"},
        ),
        model_documents(model, only=("allowed", *shared), given={"vcpus": "auto"}),
        model_documents(model, only=("vcpupin", "vcpus", "emulatorpin", *shared)),
        model_documents(model),
    ]
    # Each kind as often as the others (one_of favours its first).
    return st.sampled_from(range(len(kinds))).flatmap(kinds.__getitem__)


def model_documents(
    model: Any, only: tuple[str, ...] | None = None, given: dict[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Documents with any of ``model``'s fields (or ``only`` those; the required
    ones always, and ``given`` as given), each with values of its kind, valid or
    next to valid."""
    import typing  # noqa: PLC0415

    fields = {
        name: _for_annotation(
            name,
            typing.Annotated[(info.annotation, *info.metadata)]
            if info.metadata
            else info.annotation,
        )
        for name, info in model.model_fields.items()
        if only is None or name in only or info.is_required()
    }
    required = {n: s for n, s in fields.items() if model.model_fields[n].is_required()}
    required.update({n: st.just(v) for n, v in (given or {}).items()})
    optional = {n: s for n, s in fields.items() if n not in required}
    if not optional:
        return st.fixed_dictionaries(required)
    # One field alone (often accepted: each field is reached), or any of them.
    names = sorted(optional)
    return st.sampled_from([None, *names]).flatmap(
        lambda one: (
            st.fixed_dictionaries(required, optional=optional)
            if one is None
            else st.fixed_dictionaries({**required, one: optional[one]})
        )
    )


def field_paths(model: Any, prefix: str = "") -> list[str]:
    """Every field of ``model``, nested models' fields as dotted paths."""
    from pydantic import BaseModel  # noqa: PLC0415

    paths = []
    for name, info in model.model_fields.items():
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += field_paths(inner, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths
