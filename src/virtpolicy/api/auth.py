"""Who is asking, and may they?

Like libvirt's own two sockets, the socket decides first: anyone who can
connect to the read-write socket (mode 0660) is an operator, root an admin,
and the read-only socket (0666) gives readers only. The peer's uid, read with
SO_PEERCRED by the server, becomes the actor of its writes. Over TCP (TLS
only) a bearer token names the caller and its role.

The hook socket (0600) is for libvirtd's hook (root): it asks admission and
reports operations there, and nowhere else.

Tokens are 256 random bits shown once; the store keeps their SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from virtpolicy.errors import AuthError, ForbiddenError
from virtpolicy.store.base import Role, Tokens

Listener = Literal["unix", "unix-ro", "hook", "tcp"]
ROLES: tuple[Role, ...] = ("reader", "operator", "admin")
TOKEN_PREFIX = "vpt_"

#: ASGI scope key under which the server puts the Unix peer's (pid, uid, gid).
PEER_KEY = "virtpolicy.peer"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a name for revisions, and what it may do."""

    actor: str
    role: Role

    def require(self, role: Role) -> None:
        if ROLES.index(self.role) < ROLES.index(role):
            raise ForbiddenError(f"{self.actor} is a {self.role}; this needs the {role} role")


def new_token() -> str:
    """A fresh token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identify(
    listener: Listener,
    peer: tuple[int, int, int] | None,
    authorization: str | None,
    store: Tokens,
) -> Principal:
    """The principal of a request, from its socket and its credentials."""
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise AuthError("Authorization must be: Bearer TOKEN")
        token = store.token_by_digest(digest(secret.strip()))
        if token is None:
            raise AuthError("unknown or revoked token")
        role: Role = token.role
        if listener == "unix-ro":
            role = "reader"
        return Principal(f"token:{token.name}", role)
    if listener == "tcp" or peer is None:
        raise AuthError("a bearer token is required")
    uid = peer[1]
    if listener == "hook":
        # Mode 0600 already keeps others out; the peer check is the second lock.
        if uid not in (0, os.geteuid()):
            raise ForbiddenError(f"{_user(uid)}: the hook socket is for libvirtd's hook only")
        return Principal(_user(uid), "reader")
    if listener == "unix-ro":
        return Principal(_user(uid), "reader")
    return Principal(_user(uid), "admin" if uid == 0 else "operator")


#: How long a peer's user name is kept: it is asked of the system's user
#: database (a file, or a directory server through NSS) on the loop, so once a
#: minute per uid, not at every request.
NAME_TTL_S = 60.0
_names: dict[int, tuple[str, float]] = {}


def _user(uid: int) -> str:
    now = time.monotonic()
    known = _names.get(uid)
    if known is not None and now - known[1] < NAME_TTL_S:
        return known[0]
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    if len(_names) >= 1024:  # bounded, whoever connects
        _names.clear()
    _names[uid] = (name, now)
    return name
