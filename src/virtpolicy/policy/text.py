"""Text as people send it: one-line messages, and strings that can be stored.

Python strings may hold lone surrogates (``"\\ud800"``, from a JSON escape or
from a command-line argument that was not UTF-8), which no database, file or
socket can encode. Every input is checked with :func:`check_text` where it
enters, so that nothing further in can fail to write it.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` on one line: controls and other unprintables as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(text: str, limit: int = 60) -> str:
    """``text`` for a message: in double quotes, on one line, cut at ``limit``."""
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return f'"{printable(shown)}"'


def bad_text(text: str) -> int | None:
    """The offset of the first character that is not text (a lone surrogate), or None."""
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def not_text(value: Any) -> str | None:
    """Why a document (strings, keys, lists and mappings of them) is not all
    text, naming the first string that holds a lone surrogate; None if it is."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            at = bad_text(item)
            if at is not None:
                return (
                    f"{quoted(item)} is not text: a lone surrogate "
                    f"(\\u{ord(item[at]):04x}) at character {at}"
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None
