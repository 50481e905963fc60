"""`virtpolicy serve` as the benchmarks run it: a whole process, started and stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"


@contextmanager
def serve(db: str, run_dir: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `virtpolicy --db DB serve --run-dir RUN_DIR ARGS...` until the block ends;
    its sockets exist when the block starts."""
    daemon = subprocess.Popen(
        [str(VIRTPOLICY), "--db", db, "serve", "--run-dir", str(run_dir), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (run_dir / "virtpolicy.sock").exists():
            if daemon.poll() is not None:
                raise RuntimeError(f"virtpolicy serve exited {daemon.returncode}")
            time.sleep(0.05)
        yield daemon
    finally:
        daemon.terminate()
        daemon.wait()
