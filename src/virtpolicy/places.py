"""Where things live by default, and who is acting: what every command needs.

Standard library only, and little of it (no pathlib): the CLI imports this
before it knows its command.
"""

from __future__ import annotations

import os
import pwd

SYSTEM_DB = "/var/lib/virtpolicy/policies.db"
SYSTEM_RUN_DIR = "/run/virtpolicy"


def default_db() -> str:
    """``$VIRTPOLICY_DB``, else the system store for root, else the user's own."""
    env = os.environ.get("VIRTPOLICY_DB")
    if env:
        return env
    if os.geteuid() == 0:
        return SYSTEM_DB
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "virtpolicy", "policies.db")


def default_run_dir() -> str:
    """``/run/virtpolicy`` for root, else ``$XDG_RUNTIME_DIR/virtpolicy``."""
    if os.geteuid() == 0:
        return SYSTEM_RUN_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/virtpolicy-{os.getuid()}"
    return os.path.join(runtime, "virtpolicy")


def local_actor() -> str:
    """The Unix user running this process, as recorded in revisions.

    Under sudo the invoking user is named too: ``root (sudo: alice)``.
    """
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo: {sudo})" if sudo and sudo != name else name
