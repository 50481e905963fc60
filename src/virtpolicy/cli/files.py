"""Reading policy files named on the command line (``-f``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

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


def _bounded(source: str, stream: BinaryIO) -> bytes:
    """At most :data:`MAX_FILE_BYTES` of ``stream``: a file's size is not trusted
    (``/dev/zero`` and a FIFO say 0 and never end)."""
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(too_large(source, len(data)))
    return data


def _read(name: str) -> list[tuple[str, bytes]]:
    if name == "-":
        return [("<stdin>", _bounded("<stdin>", sys.stdin.buffer))]
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
        with path.open("rb") as stream:
            return [(name, _bounded(name, stream))]
    except OSError as exc:
        raise DocumentError(f"{name}: cannot read: {exc.strerror}") from None
