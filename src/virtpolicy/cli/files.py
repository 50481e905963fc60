"""Reading policy files named on the command line (``-f``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from virtpolicy.errors import DocumentError
from virtpolicy.policy.document import (
    MAX_FILE_BYTES,
    Document,
    check_unique,
    parse_documents,
    too_large,
)

_SUFFIXES = (".yaml", ".yml", ".json")


def read_documents(names: Sequence[str]) -> list[Document]:
    """Every policy in the files ``names`` (``-`` is standard input; a
    directory means its ``*.yaml``, ``*.yml`` and ``*.json``), each guest once."""
    docs: list[Document] = []
    for name in names:
        for source, data in _read(name):
            docs.extend(parse_documents(data, source))
    if not docs:
        raise DocumentError("no policy documents given")
    return check_unique(docs)


def _read(name: str) -> list[tuple[str, bytes]]:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise DocumentError(too_large("<stdin>", len(data)))
        return [("<stdin>", data)]
    path = Path(name)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise DocumentError(f"{name}: directory holds no .yaml, .yml or .json files")
        return [item for f in files for item in _read(str(f))]
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DocumentError(too_large(name, size))
        return [(name, path.read_bytes())]
    except OSError as exc:
        raise DocumentError(f"{name}: cannot read: {exc.strerror}") from None
