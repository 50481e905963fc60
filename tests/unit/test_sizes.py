"""Every module stays small enough to read in one sitting: no Python module of
src/ over 450 lines, no script of the web page over 300."""

from __future__ import annotations

from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "virtpolicy"
LIMITS = {"*.py": 450, "web/static/*.js": 300}


@pytest.mark.parametrize(("pattern", "limit"), LIMITS.items())
def test_no_module_is_too_long(pattern: str, limit: int) -> None:
    files = sorted(SRC.rglob(pattern) if pattern.startswith("*") else SRC.glob(pattern))
    assert files, pattern
    long = {
        str(f.relative_to(SRC)): n for f in files if (n := len(f.read_text().splitlines())) > limit
    }
    assert long == {}, f"over {limit} lines"
