"""Entry point of the ``virtpolicy`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the CLI. ``virtpolicy --version`` alone answers before the command-line
    framework is even imported (scripts ask it to check what is installed)."""
    if sys.argv[1:] == ["--version"]:
        from virtpolicy import __version__  # noqa: PLC0415

        print(f"virtpolicy, version {__version__}")
        return
    from virtpolicy.cli.app import cli  # noqa: PLC0415

    cli.main(prog_name="virtpolicy")


def __getattr__(name: str) -> object:
    if name == "cli":  # `from virtpolicy.cli.main import cli`, as the tests do
        from virtpolicy.cli.app import cli  # noqa: PLC0415

        return cli
    raise AttributeError(name)


__all__ = ["main"]
