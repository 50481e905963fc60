#!/usr/bin/python3 -IS
"""virtpolicy's libvirt QEMU hook (installed as /etc/libvirt/hooks/qemu).

libvirtd runs it as ``qemu GUEST OPERATION PHASE -`` with the domain XML on
standard input, several times per start. Before a start (``prepare begin``)
it asks the virtpolicy daemon whether GUEST may start; when a required
dependency is not up it exits 1 with the reason on standard error, and
libvirt refuses the start with that reason. Other operations are reported to
the daemon so that its view of the guests stays current. A hook that was
there before is run first.

Standard library only, nothing of virtpolicy, and as little of that as each
call needs (``-IS``: no site packages; modules imported only when used): it
runs inside every start.
"""

import os
import sys

# VIRTPOLICY-HOOK: settings written by `virtpolicy hook install`.
RUN_DIR = "/run/virtpolicy"
HOOK_FAILURE = "open"  # when the daemon does not answer: "open" allows, "closed" refuses
CHAINED = "/etc/libvirt/hooks/qemu.chained-by-virtpolicy"
TIMEOUT_S = 10.0

REPORTED = {"started", "stopped", "release", "restore", "reconnect", "migrate"}


def ask(method: str, path: str) -> object:
    """One HTTP/1.0 request over the daemon's Unix socket; the decoded answer."""
    import json  # noqa: PLC0415  (imported only when a request is made)
    import socket  # noqa: PLC0415

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    try:
        sock.connect(os.path.join(RUN_DIR, "virtpolicy.sock"))
        sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: virtpolicy\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if not 200 <= status < 400:
        raise ValueError(f"daemon answered HTTP {status}: {body[:200]!r}")
    return json.loads(body) if body else None


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: qemu GUEST OPERATION PHASE [EXTRA]", file=sys.stderr)
        return 2
    guest, operation, phase = argv[1], argv[2], argv[3]
    if os.access(CHAINED, os.X_OK):
        import subprocess  # noqa: PLC0415

        chained = subprocess.run([CHAINED, *argv[1:]], stdin=sys.stdin, check=False)
        if chained.returncode:
            return chained.returncode
    before_start = operation == "prepare" and phase == "begin"
    if not before_start and operation not in REPORTED:
        return 0
    from urllib.parse import quote  # noqa: PLC0415

    name = quote(guest, safe="")
    try:
        if before_start:
            answer = ask("GET", f"/v1/guests/{name}/admission")
            if isinstance(answer, dict) and not answer.get("allowed", True):
                print(
                    "; ".join(answer.get("reasons") or ["refused by virtpolicy"]), file=sys.stderr
                )
                return 1
        elif operation in REPORTED:
            ask("POST", f"/v1/hook/{name}/{quote(operation)}/{quote(phase)}")
    except (OSError, ValueError) as exc:
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
