"""Hearing that the store changed, without reading it.

Every daemon keeps the stored policies in memory and must learn, cheaply and
soon, that some process wrote. Two ways, one interface
(:class:`~virtpolicy.store.base.ChangeFeed`):

- SQLite: ``PRAGMA data_version`` (a few microseconds; it moves whenever
  another connection commits), looked at as soon as the kernel says the
  database's directory changed (inotify: a commit writes the WAL file), and
  every ``timeout`` seconds in any case (with inotify the daemon waits
  :data:`UNHEARD_S`).
- PostgreSQL: every write transaction sends ``NOTIFY virtpolicy_changes``
  with the revisions it wrote and the guests they are about, and the
  revisions themselves when they fit in a notification; the feed
  ``LISTEN``s on a connection of its own and returns as soon as one arrives,
  so a write reaches every daemon without polling.

Either way the daemon then reads only the revisions written since it last
read (:meth:`~virtpolicy.store.base.PolicyStore.revisions_since`), or, when
the notifications carried every one of them in order, reads nothing
(:meth:`PostgresFeed.written`): a write then costs each daemon of a fleet
no query at all.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import json
import logging
import os
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from virtpolicy.errors import StoreError
from virtpolicy.store.base import Revision, Wanted

log = logging.getLogger(__name__)

#: The channel every write notifies on PostgreSQL, for a store in the ``public``
#: schema; a store in a schema of its own has a channel of its own (see
#: :func:`channel`), so that stores sharing one database never hear each other.
CHANNEL = "virtpolicy_changes"


def channel(schema: str) -> str:
    """The channel of the store whose tables are in ``schema``."""
    if schema == "public":
        return CHANNEL
    return f"{CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"


#: NOTIFY payloads must stay under 8000 bytes (bytes, not characters: a guest
#: name of 255 emoji is 1,020 bytes); the guest names are cut first.
_PAYLOAD_MAX = 7000


#: Notifications kept for the reader between two refreshes; more: read the store.
_KEEP = 256


def payload(first: int, last: int, guests: list[str], rows: Sequence[Sequence[Any]] = ()) -> str:
    """What a write tells the listeners: ``"FIRST-LAST guest,guest,..."``, the
    guests cut short (ending in ``...``) where they would not fit, then on a
    second line the revisions as JSON rows (seq, guest, revision, action,
    actor, created_at, doc) when the whole fits in a notification."""
    names = ",".join(guests)
    encoded = names.encode()
    if len(encoded) > _PAYLOAD_MAX:
        cut = encoded[: _PAYLOAD_MAX - 4].decode(errors="ignore")  # not within a character
        names = cut.rsplit(",", 1)[0] + ",..."
    told = f"{first}-{last} {names}"
    if rows:
        # ASCII (JSON escapes the rest), so its length is its size in bytes.
        carried = json.dumps([list(r) for r in rows], separators=(",", ":"))
        if len(told.encode()) + 1 + len(carried) < _PAYLOAD_MAX:
            told += "\n" + carried
    return told


class PollFeed:
    """Reads a change marker every ``timeout`` seconds (SQLite's ``data_version``,
    or the global revision elsewhere) and compares it with the last one; when it
    moved, reads the global revision, so that writes of other records (a host's
    heartbeat, the guests' states) do not count as policy changes."""

    def __init__(self, marker: Callable[[], int], revision: Callable[[], int]) -> None:
        self._marker = marker
        self._revision = revision
        self._last: int | None = None
        self._last_revision: int | None = None

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        if stop.wait(timeout):
            return False
        return self.check()

    def written(self, wanted: Wanted | None = None) -> list[Revision] | None:
        return None  # only the store can tell

    #: It hears nothing: it looks every ``timeout``.
    wakes_on_write = False

    def interrupt(self) -> None:
        pass  # its wait is ``stop.wait``, which setting ``stop`` ends

    def check(self) -> bool:
        """Whether the policies changed since the last look (a store error counts:
        the reader finds out what it can)."""
        try:
            marker = self._marker()
            if marker == self._last:
                return False
            revision = self._revision()
        except StoreError as exc:
            log.debug("store watch: %s", exc)
            return True
        changed = revision != self._last_revision  # the first look counts
        self._last, self._last_revision = marker, revision
        return changed

    def close(self) -> None:
        pass


#: inotify(7): a file in the watched directory was written, closed after
#: writing, created, or moved in.
_IN_WRITTEN = 0x2 | 0x8 | 0x100 | 0x80
#: A change heard before its commit is complete is looked at once more after this.
_SETTLE_S = 0.02
#: How long a caller waits on a feed that :attr:`~DirectoryFeed.wakes_on_write`
#: (then the change marker is read all the same, in case a write went unheard).
UNHEARD_S = 30.0


class DirectoryFeed:
    """SQLite: a :class:`PollFeed` woken by inotify when the database's directory
    changes (Linux; elsewhere only polled). A commit writes the directory's
    files, so with inotify a wait ends at a write (:attr:`wakes_on_write`), and
    a caller can wait long: an idle daemon's thread need not wake every few
    seconds for nothing."""

    def __init__(self, directory: str, poll: PollFeed) -> None:
        self._poll = poll
        self._fd = _watch(directory)
        #: Wakes a wait at once (:meth:`interrupt`), as ``stop.wait`` would.
        self._wake: int | None = None
        if self._fd is not None:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._closing = threading.Lock()

    @property
    def wakes_on_write(self) -> bool:
        return self._fd is not None

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        if self._fd is None or self._wake is None:
            return self._poll.wait(timeout, stop)
        ready, _, _ = select.select([self._fd, self._wake], [], [], timeout)
        if stop.is_set():
            return False
        if self._fd not in ready:
            return self._poll.check()
        _drain(self._fd)
        if self._poll.check():
            return True
        # The WAL may be written before the commit is visible: look once more.
        return not stop.wait(_SETTLE_S) and self._poll.check()

    def interrupt(self) -> None:
        with self._closing:  # never a descriptor closed meanwhile, or reused
            if self._wake is not None:
                os.eventfd_write(self._wake, 1)

    def written(self, wanted: Wanted | None = None) -> list[Revision] | None:
        return None

    def close(self) -> None:
        with self._closing:
            for fd in (self._fd, self._wake):
                if fd is not None:
                    os.close(fd)
            self._fd = self._wake = None


def _watch(directory: str) -> int | None:
    """An inotify descriptor watching ``directory`` for writes; None without one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_WRITTEN) < 0:
        log.debug("store watch: inotify on %s: %s", directory, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return fd


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except BlockingIOError:
            return


class PostgresFeed:
    """``LISTEN``s on a connection of its own; reconnects after an error."""

    def __init__(
        self,
        engine: Engine,
        url: URL,
        decode: Callable[[Sequence[Any], Wanted | None], Revision],
    ) -> None:
        self._engine = engine
        self._url = url
        self._decode = decode
        self._conn: Any = None  # psycopg.Connection, autocommit
        #: The payload of the last notification heard (see :func:`payload`).
        self.heard = ""
        #: Payloads heard since :meth:`written` last took them; None after a gap
        #: (a reconnection, too many): then only the store can tell.
        self._news: collections.deque[str] | None = collections.deque()
        self._lock = threading.Lock()

    #: It hears every write, but its wait's timeout also paces its reconnection.
    wakes_on_write = False

    def interrupt(self) -> None:
        pass  # its wait ends within the caller's timeout

    def written(self, wanted: Wanted | None = None) -> list[Revision] | None:
        """The revisions the notifications since the last call carried, in order
        (those of guests not ``wanted`` undecoded); None when one did not carry
        its revisions, or some may have been missed."""
        with self._lock:
            news, self._news = self._news, collections.deque()
        if news is None:
            return None
        found: list[Revision] = []
        try:
            for told in news:
                _, _, rows = told.partition("\n")
                if not rows:
                    return None
                found += [self._decode(row, wanted) for row in json.loads(rows)]
        except (ValueError, TypeError, IndexError, StoreError) as exc:
            log.debug("store watch: a notification not understood: %s", exc)
            return None
        return found

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return False
        try:
            if self._conn is None:
                self._connect()
                with self._lock:
                    self._news = None  # anything may have been written while not listening
                return True
            heard = list(self._conn.notifies(timeout=timeout, stop_after=1))
        except Exception as exc:
            log.debug("store watch on %s: %s", self._url, exc)
            self.close()
            stop.wait(min(timeout, 1.0))
            return True
        if heard:
            self.heard = heard[-1].payload
            with self._lock:
                if self._news is not None and len(self._news) < _KEEP:
                    self._news.extend(n.payload for n in heard)
                else:
                    self._news = None
        return bool(heard)

    def _connect(self) -> None:
        raw = self._engine.raw_connection()
        conn: Any = raw.driver_connection
        raw.detach()  # the feed's own, never back into the pool
        conn.autocommit = True
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        conn.execute(f"LISTEN {channel(schema)}")
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:
                log.debug("store watch: closing: %s", exc)
            self._conn = None
