#!/usr/bin/python3 -I
"""virtpolicy's libvirt QEMU hook (installed as /etc/libvirt/hooks/qemu).

libvirtd runs it as ``qemu GUEST OPERATION PHASE -`` with the domain XML on
standard input. Before a start (``prepare begin``) it asks the virtpolicy
daemon whether GUEST may start; when a required dependency is not up it
exits 1 with the reason on standard error, and libvirt refuses the start with
that reason. Other operations are reported to the daemon so that its view of
the guests stays current. A hook that was there before is run first.

Standard library only, nothing of virtpolicy: it runs inside every start.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.parse

# VIRTPOLICY-HOOK: settings written by `virtpolicy hook install`.
RUN_DIR = "/run/virtpolicy"
HOOK_FAILURE = "open"  # when the daemon does not answer: "open" allows, "closed" refuses
CHAINED = "/etc/libvirt/hooks/qemu.chained-by-virtpolicy"
TIMEOUT_S = 10.0

REPORTED = {"started", "stopped", "release", "restore", "reconnect", "migrate"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("virtpolicy", timeout=TIMEOUT_S)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(self.socket_path)
        self.sock = sock


def ask(method: str, path: str) -> object:
    conn = _UnixConnection(os.path.join(RUN_DIR, "virtpolicy.sock"))
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status >= 400:
        raise ValueError(f"daemon answered HTTP {response.status}: {body[:200]!r}")
    return json.loads(body) if body else None


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: qemu GUEST OPERATION PHASE [EXTRA]", file=sys.stderr)
        return 2
    guest, operation, phase = argv[1], argv[2], argv[3]
    xml = sys.stdin.buffer.read()
    if os.access(CHAINED, os.X_OK):
        chained = subprocess.run([CHAINED, *argv[1:]], input=xml, check=False)
        if chained.returncode:
            return chained.returncode
    name = urllib.parse.quote(guest, safe="")
    before_start = operation == "prepare" and phase == "begin"
    try:
        if before_start:
            answer = ask("GET", f"/v1/guests/{name}/admission")
            if isinstance(answer, dict) and not answer.get("allowed", True):
                print(
                    "; ".join(answer.get("reasons") or ["refused by virtpolicy"]), file=sys.stderr
                )
                return 1
        elif operation in REPORTED:
            ask(
                "POST",
                f"/v1/hook/{name}/{urllib.parse.quote(operation)}/{urllib.parse.quote(phase)}",
            )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if before_start and HOOK_FAILURE == "closed":
            print(
                f"virtpolicy daemon does not answer ({exc}); hook_failure=closed refuses {guest}",
                file=sys.stderr,
            )
            return 1
        print(f"virtpolicy: daemon does not answer ({exc}); going on", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
