"""Policy files: YAML streams or JSON, one policy per document.

A YAML file holds one or more documents separated by ``---``; a JSON file
holds one policy object or an array of them. Empty YAML documents are skipped.
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

from virtpolicy.errors import DocumentError, PolicyError
from virtpolicy.policy.model import GuestPolicy, parse_policy

#: Largest policy file read, a guard against mistakes (a log file, an image).
MAX_FILE_BYTES = 8 * 1024 * 1024

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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


def load_json(text: str | bytes, source: str) -> Any:
    """One JSON value; DocumentError (one line, naming ``source``) for anything
    that is not one: bad syntax, nesting too deep for the parser, an integer
    with more digits than Python converts."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise DocumentError(f"{source}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # int() over sys.get_int_max_str_digits(), bad UTF-8
        raise DocumentError(f"{source}: not valid JSON: {_first_clause(exc)}") from None


def _first_clause(exc: Exception) -> str:
    return str(exc).split(":")[0].split(";")[0][:120]


def _load_json(text: str, source: str) -> list[tuple[int, Any]]:
    value = load_json(text, source)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise DocumentError(f"{source}: holds no policy documents")
    return list(enumerate(items, start=1))


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
    if not any(raw is not None for _, raw in docs):
        raise DocumentError(f"{source}: holds no policy documents")
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
