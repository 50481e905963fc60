"""The files the Debian package installs that virtpolicy itself writes.

``debian/rules`` runs ``python -m virtpolicy.system.packaged DIR`` with the
package's own virtpolicy: the unit starting ``/usr/bin/virtpolicy``, the
commented settings file, the hook with the system's run directory (whoever
builds the package) and the man page. They are the same texts ``virtpolicy
setup`` writes, so that the two ways onto a host cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from virtpolicy.hook.install import hook_text
from virtpolicy.places import SYSTEM_RUN_DIR
from virtpolicy.system.setup import template, unit_text

#: The packaged hook's own settings (a conffile).
HOOK_SETTINGS = "/etc/virtpolicy/hook.conf"
HOOK_CONF = """\
# /etc/virtpolicy/hook.conf: read by libvirt's hook (/usr/lib/virtpolicy/qemu-hook)
# each time libvirtd runs it, as shell. Only this is read:
#
# When the daemon does not answer (within 5 s): open lets the guest start,
# closed refuses the start.
HOOK_FAILURE=open
"""


def write(folder: Path, epoch: float | None = None) -> list[Path]:
    """Write the files into ``folder``; the paths written."""
    from virtpolicy.cli.app import cli  # noqa: PLC0415  (every command, for the man page)
    from virtpolicy.system.manpage import page  # noqa: PLC0415

    texts = {
        "virtpolicy.service": unit_text("/usr/bin/virtpolicy"),
        "virtpolicy.toml": template("virtpolicy.toml"),
        "qemu-hook": hook_text(SYSTEM_RUN_DIR, "open", "", settings=HOOK_SETTINGS),
        "hook.conf": HOOK_CONF,
        "virtpolicy.1": page(cli, epoch),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m virtpolicy.system.packaged DIR")
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    for path in write(Path(sys.argv[1]), float(epoch) if epoch.isdigit() else None):
        print(path)


if __name__ == "__main__":
    main()
