"""The README and docs/ link only to files of this repository, and each exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository(page: Path) -> None:
    targets = LINK.findall(page.read_text())
    for target in targets:
        path = target.partition("#")[0]
        assert "://" not in target, f"{page.name}: {target}"
        assert not target.startswith("/"), f"{page.name}: {target}"
        if not path:
            continue
        resolved = (page.parent / path).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"


def test_readme_links_every_docs_page() -> None:
    readme = LINK.findall((ROOT / "README.md").read_text())
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in readme}
    assert set(PAGES[1:]) <= linked, "a page in docs/ the README does not link"
