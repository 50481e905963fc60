"""Counter files read cheaply: procfs and cgroup files are made anew by the
kernel at each read from offset 0, so a file held open is read again with one
``pread``, without a path walk, an open and a close."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable


class OpenFiles:
    """Counter files held open between samples: each read is then one ``pread``
    at offset 0 (procfs and cgroup files are made anew at each read from the
    start), not a path walk, a read and a close. A file of a process that is gone
    reads as None (the kernel answers ESRCH), and is closed. Where no descriptor
    is left (the process's limit), files are read as before, not held."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def fd(self, path: str) -> int | None:
        """``path`` held open (opened now if it is not yet); None if it cannot be."""
        try:
            return self._held(path)
        except OSError:
            return None

    def _held(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def read(self, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            fd = self._held(path)
        except OSError as exc:
            return read_once(path) if exc.errno in (errno.EMFILE, errno.ENFILE) else None
        try:
            size = 4096  # a page: these files are smaller (a 16 KiB buffer cost 1 µs more)
            while len(data := os.pread(fd, size, 0)) == size:  # it may be longer: all of it
                size *= 4
        except OSError:
            data = b""
        if not data:
            self.close([path])
            return None
        return data

    def close(self, paths: Iterable[str | None] | None = None) -> None:
        """Close ``paths`` (default: every file held)."""
        for path in list(self._fds) if paths is None else paths:
            fd = self._fds.pop(path, None) if path is not None else None
            if fd is not None:
                os.close(fd)


def read_once(path: str | None) -> bytes | None:
    """A small file's bytes in one read (procfs and cgroup files are read whole
    by the kernel at the first read), or None: a few microseconds, where
    ``Path.read_text`` costs ten times that."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 16384)
    except OSError:
        return None
    finally:
        os.close(fd)
