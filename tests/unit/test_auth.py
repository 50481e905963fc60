"""Who a Unix peer is: its user name, asked of the system once a minute per uid."""

from __future__ import annotations

import pwd

import pytest

from virtpolicy.api import auth


def test_a_peers_name_is_asked_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's name comes from the user database on the event loop: asked once
    per uid, again only after NAME_TTL_S; an unknown uid is named by number."""
    asked: list[int] = []

    def getpwuid(uid: int) -> pwd.struct_passwd:
        asked.append(uid)
        if uid == 4242:
            raise KeyError(uid)
        return pwd.struct_passwd(("alice", "x", uid, uid, "", "/", "/bin/sh"))

    now = [1000.0]
    monkeypatch.setattr(auth.pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(auth, "_names", {})
    assert auth.identify("unix-ro", (1, 1001, 1001), None, None).actor == "alice"  # type: ignore[arg-type]
    assert auth.identify("unix", (1, 1001, 1001), None, None).actor == "alice"  # type: ignore[arg-type]
    assert asked == [1001]
    assert auth._user(4242) == "uid 4242"
    now[0] += auth.NAME_TTL_S
    assert auth._user(1001) == "alice"
    assert asked == [1001, 4242, 1001]
