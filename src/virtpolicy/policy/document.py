"""Policy files: YAML streams or JSON, one policy per document.

A YAML file holds one or more documents separated by ``---`` (or one
document that is a list of policies); a JSON file holds one policy object or
an array of them. Empty YAML documents are skipped.
Errors name the source and the document number (1-based) and stay on one line.

Reading is from bytes already in memory: the caller reads the file (and
enforces :data:`MAX_FILE_BYTES` before reading it all).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from virtpolicy import loopguard
from virtpolicy.errors import DocumentError, PolicyError
from virtpolicy.policy.model import GuestPolicy, parse_policy
from virtpolicy.policy.text import not_text, printable, quoted

#: Largest policy file read, a guard against mistakes (a log file, an image).
MAX_FILE_BYTES = 8 * 1024 * 1024

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True, slots=True)
class Document:
    """One validated policy and where it came from."""

    policy: GuestPolicy
    source: str
    index: int

    @property
    def where(self) -> str:
        return f"{self.source}, document {self.index}"


def decode(data: bytes, source: str) -> str:
    """Decode UTF-8 (a BOM is allowed), naming the first bad byte otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(too_large(source, len(data)))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def too_large(source: str, size: int) -> str:
    """The message for a file over :data:`MAX_FILE_BYTES`."""
    return (
        f"{source}: {size} bytes is over the limit of {MAX_FILE_BYTES // (1024 * 1024)} MiB "
        "for one policy file; split it into several files"
    )


@loopguard.off_loop
def parse_documents(data: bytes, source: str) -> list[Document]:
    """Parse and validate every policy in ``data`` (a file's bytes)."""
    text = decode(data, source)
    raws = _load_json(text, source) if _looks_like_json(text) else _load_yaml(text, source)
    docs: list[Document] = []
    for index, raw in raws:
        if raw is None:
            continue
        try:
            policy = parse_policy(raw)
        except PolicyError as exc:
            guest = raw.get("guest") if isinstance(raw, dict) else None
            named = f" ({guest})" if isinstance(guest, str) and len(guest) <= 80 else ""
            raise DocumentError(
                f"{source}, document {index}{named}: {exc}", field=exc.field
            ) from None
        docs.append(Document(policy, source, index))
    return docs


def check_unique(docs: Iterable[Document]) -> list[Document]:
    """Refuse two documents for the same guest, naming both places."""
    seen: dict[str, Document] = {}
    for doc in docs:
        first = seen.setdefault(doc.policy.guest, doc)
        if first is not doc:
            raise DocumentError(
                f'guest "{doc.policy.guest}" appears twice: {first.where} and {doc.where}',
                field="guest",
            )
    return list(seen.values())


def dump_yaml(policies: Sequence[GuestPolicy]) -> str:
    """A YAML stream of ``policies``, one document each, in the given order."""
    return yaml.dump_all(
        [p.to_document() for p in policies],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        explicit_start=len(policies) > 1,
    )


def dump_json(policies: Sequence[GuestPolicy]) -> str:
    """A JSON array of ``policies``, indented, keys in field order."""
    return json.dumps([p.to_document() for p in policies], indent=2, ensure_ascii=False) + "\n"


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


@loopguard.off_loop
def load_json(text: str | bytes, source: str) -> Any:
    """One JSON value; DocumentError (one line, naming ``source``) for anything
    that is not one: bad syntax, nesting too deep for the parser, an integer
    with more digits than Python converts, a key twice in one object, a string
    that is not text (a lone surrogate, from an escape such as ``\\ud800``)."""
    if isinstance(text, bytes):
        text = decode(text, source)
    try:
        value = json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, source))
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise DocumentError(f"{source}: not valid JSON: nested too deeply") from None
    except DocumentError:
        raise
    except ValueError as exc:  # int() over sys.get_int_max_str_digits()
        raise DocumentError(f"{source}: not valid JSON: {_first_clause(exc)}") from None
    check_strings(value, source)
    return value


def _unique(pairs: list[tuple[Any, Any]], source: str) -> dict[Any, Any]:
    """An object from its pairs, refusing a key that comes twice: JSON parsers
    differ on which one wins, so a document that says both means neither."""
    found = dict(pairs)
    if len(found) != len(pairs):
        dup = _first_repeat(k for k, _ in pairs)
        raise DocumentError(
            f"{source}: the key {quoted(str(dup))} appears twice in one object",
            field=printable(str(dup)[:60]),
        )
    return found


def check_strings(value: Any, source: str) -> None:
    """Refuse a document holding a string (or key) that is not text: a lone
    surrogate, which nothing can store or send."""
    why = not_text(value)
    if why is not None:
        raise DocumentError(f"{source}: {why}")


def _first_clause(exc: Exception) -> str:
    return str(exc).split(":")[0].split(";")[0][:120]


def _load_json(text: str, source: str) -> list[tuple[int, Any]]:
    value = load_json(text, source)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise DocumentError(f"{source}: holds no policy documents")
    return list(enumerate(items, start=1))


class _Loader(_BaseLoader):  # type: ignore[misc]  # C or Python, as PyYAML was built
    """The safe loader, refusing a key twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):
            dup = _first_repeat(self.construct_object(k, deep=True) for k, _ in node.value)
            if dup is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {quoted(str(dup))} appears twice in one mapping",
                    node.start_mark,
                )
        return mapping


def _first_repeat(keys: Iterable[Any]) -> Any:
    seen: set[Any] = set()
    for key in keys:
        try:
            if key in seen:
                return key
            seen.add(key)
        except TypeError:  # unhashable: PyYAML refuses it itself
            continue
    return None


def _load_yaml(text: str, source: str) -> list[tuple[int, Any]]:
    loader = _Loader(text)
    docs: list[tuple[int, Any]] = []
    try:
        index = 0
        while loader.check_node():
            index += 1
            node = loader.get_node()
            if node is None:
                break
            _refuse_aliases(node, source, index)
            docs.append((index, loader.construct_document(node)))
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentError(f"{source}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        raise DocumentError(f"{source}: not valid YAML: {_first_clause(exc)}") from None
    finally:
        loader.dispose()
    if len(docs) == 1 and isinstance(docs[0][1], list):  # one list of them, as in JSON
        docs = list(enumerate(docs[0][1], start=1))
    if not any(raw is not None for _, raw in docs):
        raise DocumentError(f"{source}: holds no policy documents")
    check_strings([raw for _, raw in docs], source)
    return docs


def _refuse_aliases(node: yaml.Node, source: str, index: int) -> None:
    # Anchors and aliases let a small file expand into a huge structure (the
    # "billion laughs"); a policy never needs them.
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            raise DocumentError(
                f"{source}, document {index}: YAML aliases (*name) are not allowed in policies"
            )
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc).replace("\n", " ")
