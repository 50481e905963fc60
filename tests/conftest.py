"""Shared fixtures: a real SQLite store in a temporary directory, and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from virtpolicy.cli.main import cli
from virtpolicy.store import SqlStore


@dataclass
class Cli:
    """Runs ``virtpolicy --db DB ...`` in-process, like a user would."""

    db: str

    def __call__(self, *args: str, input: str | bytes | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--db", self.db, *args], input=input, catch_exceptions=False
        )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "policies.db")


@pytest.fixture
def store(db: str) -> Iterator[SqlStore]:
    s = SqlStore(db)
    yield s
    s.close()


@pytest.fixture
def run(db: str) -> Cli:
    return Cli(db)


def snapshot(db: str) -> tuple[int, str, list[tuple[str, int]]]:
    """Everything a refused request must leave alone: the global revision,
    every policy, and every revision ever written."""
    s = SqlStore(db)
    try:
        policies = "\n".join(
            p.policy.canonical_json() + f"@{p.revision}" for p in s.list_policies()
        )
        revisions = [(g, len(s.history(g))) for g in s.guests()]
        return s.global_revision(), policies, revisions
    finally:
        s.close()
