"""Putting the hook program in place (``virtpolicy hook install``)."""

from __future__ import annotations

import os
import re
import shlex
import socket
from pathlib import Path

from virtpolicy.errors import ConfigError, HookInstallError

MARKER = "VIRTPOLICY-HOOK"
SOURCE = Path(__file__).with_name("qemu.sh")


#: How long the hook tries again to reach a daemon whose socket is away (s).
RETRY_S = 5.0


def hook_text(
    run_dir: str,
    failure: str,
    chained: str,
    client: str = "auto",
    retry: float = RETRY_S,
    settings: str = "",
) -> str:
    """The hook program with its settings filled in (``client``: which interpreter
    asks the daemon, perl or python; auto takes perl where it is installed;
    ``retry``: how long a socket that is away is tried again, in tenths;
    ``settings``: a shell file that may set HOOK_FAILURE, read at each call)."""
    if failure not in ("open", "closed"):
        raise ConfigError(f"hook_failure: {failure!r} is not open or closed")
    if client not in ("auto", "perl", "python"):
        raise ConfigError(f"hook client: {client!r} is not auto, perl or python")
    text = SOURCE.read_text()
    values = (("RUN_DIR", run_dir), ("HOOK_FAILURE", failure), ("CHAINED", chained))
    unix_stream = f"{int(socket.AF_UNIX)} {int(socket.SOCK_STREAM)}"
    tries = ("RETRY_S", f"{retry:.1f}")
    more = (("CLIENT", client), ("UNIX_STREAM", unix_stream), tries, ("SETTINGS", settings))
    for key, value in (*values, *more):
        line = f"{key}={shlex.quote(value)}".replace("\\", "\\\\")  # re.subn reads backslashes
        text, found = re.subn(rf'^{key}="[^"]*"', line, text, count=1, flags=re.M)
        assert found == 1, key  # the template names each setting once
    return text


def install(
    hooks_dir: str, run_dir: str, failure: str, client: str = "auto", retry: float = RETRY_S
) -> list[str]:
    """Install ``hooks_dir/qemu``; an existing foreign hook is kept and chained.

    Returns what was done, one line each.
    """
    directory = Path(hooks_dir)
    target = directory / "qemu"
    chained = directory / "qemu.chained-by-virtpolicy"
    done = []
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        if target.exists() and MARKER not in target.read_text(errors="replace"):
            if chained.exists():
                raise HookInstallError(f"{chained} exists already; not overwriting a chained hook")
            target.rename(chained)
            done.append(f"kept the existing hook as {chained}; it runs first")
        tmp = directory / ".qemu.virtpolicy.tmp"
        tmp.write_text(hook_text(run_dir, failure, str(chained), client, retry))
        os.chmod(tmp, 0o755)
        tmp.replace(target)
    except OSError as exc:
        raise HookInstallError(f"hook: cannot install into {hooks_dir}: {exc.strerror}") from None
    done.append(f"installed {target} (daemon sockets in {run_dir}, hook_failure={failure})")
    done.append("libvirtd reads hook files when it starts: restart it (systemctl restart libvirtd)")
    return done


def uninstall(hooks_dir: str) -> list[str]:
    """Remove our hook and put back the one it chained to, if any."""
    directory = Path(hooks_dir)
    target = directory / "qemu"
    chained = directory / "qemu.chained-by-virtpolicy"
    if not target.exists() or MARKER not in target.read_text(errors="replace"):
        raise HookInstallError(f"{target} is not virtpolicy's hook")
    target.unlink()
    done = [f"removed {target}"]
    if chained.exists():
        chained.rename(target)
        done.append(f"put back the earlier hook as {target}")
    done.append("restart libvirtd for it to notice")
    return done
