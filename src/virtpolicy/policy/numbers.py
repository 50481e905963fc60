"""Whole numbers written in text: ASCII digits only.

``str.isdigit()`` accepts ``"²"`` and ``"٣"``, which ``int()`` then refuses or
reads as another number; every number virtpolicy reads from text (a header, a
flag, a condition) goes through :func:`ascii_int` instead.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def ascii_int(text: str, *, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative int if it is 1 to ``max_digits`` ASCII digits, else None."""
    if len(text) > max_digits or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)
