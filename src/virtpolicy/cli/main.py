"""Entry point of the ``virtpolicy`` console script."""

from __future__ import annotations

from virtpolicy.cli.app import cli


def main() -> None:
    """Run the CLI."""
    cli.main(prog_name="virtpolicy")


__all__ = ["cli", "main"]
