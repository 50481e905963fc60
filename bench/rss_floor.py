"""What a daemon's resident memory is made of before it holds any guest: a fresh
interpreter, then each layer of what ``virtpolicy serve`` imports, one after
the other in the same process (each layer's figure includes those before it).

Usage: .venv/bin/python bench/rss_floor.py [--least]

With ``--least``, the layers of the least a fleet daemon in Python must import:
libvirt's binding, PostgreSQL's driver alone (no SQLAlchemy) and asyncio's
own streams (no web framework): what a daemon would start from that did
without the libraries this one is built on.

Prints, per layer, the process's RSS and its two parts (``RssAnon``: the
interpreter's objects, private to the process; ``RssFile``: pages of shared
libraries and extension modules, shared with every other process that maps the
same files) in MiB, and how many modules are loaded.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

LAYERS = [
    ("a bare interpreter", []),
    ("libvirt's binding", ["libvirt"]),
    ("the store: SQLAlchemy, psycopg", ["sqlalchemy", "sqlalchemy.dialects.postgresql", "psycopg"]),
    ("the API: FastAPI, pydantic, uvicorn", ["fastapi", "uvicorn", "pydantic"]),
    (
        "virtpolicy's own modules (all that `serve` imports)",
        [
            "virtpolicy.cli.main",
            "virtpolicy.cli.serve",
            "virtpolicy.store.sql",
            "virtpolicy.engine.daemon.controller",
            "virtpolicy.api.server",
        ],
    ),
]

LEAST = [
    ("a bare interpreter", []),
    ("libvirt's binding", ["libvirt"]),
    ("psycopg alone", ["psycopg"]),
    ("asyncio's streams, json, ssl", ["asyncio", "json", "ssl"]),
]


def memory() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    return {
        key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M)[1]) / 1024  # type: ignore[index]
        for key in ("VmRSS", "RssAnon", "RssFile")
    }


def main() -> None:
    print("| layer | RSS | anonymous | file-backed | modules |")
    print("|---|---|---|---|---|")
    for label, modules in LEAST if "--least" in sys.argv[1:] else LAYERS:
        for name in modules:
            importlib.import_module(name)
        m = memory()
        print(
            f"| {label} | {m['VmRSS']:.0f} | {m['RssAnon']:.0f} | {m['RssFile']:.0f} "
            f"| {len(sys.modules)} |"
        )


if __name__ == "__main__":
    main()
