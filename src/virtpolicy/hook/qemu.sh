#!/bin/sh
# VIRTPOLICY-HOOK: virtpolicy's libvirt QEMU hook, installed as
# /etc/libvirt/hooks/qemu by `virtpolicy hook install` (which fills in the
# settings below; `virtpolicy hook uninstall` removes it).
#
# libvirtd runs it as `qemu GUEST OPERATION PHASE EXTRA`, with the domain XML
# on standard input, three times for every start, and waits each time. So
# the front is POSIX sh, which costs well under a millisecond:
# - a hook that was here before runs first, with the same arguments and input;
# - `prepare begin` (before a start) asks the virtpolicy daemon whether GUEST
#   may start; a refusal exits 1 with the reason on standard error, and
#   libvirt refuses the start with that reason;
# - `migrate begin` (on the destination of a migration) asks whether GUEST's
#   policy can hold here (its fixed pins name CPUs this host has, and the
#   placer finds room for its vCPUs, counted from the domain XML); a refusal
#   fails the migration with the reason;
# - stopped, release, restore and reconnect are reported to the
#   daemon in the background, so that libvirtd does not wait for them (not
#   `started`: the daemon hears that event from libvirt, and a Python start
#   during every guest's start cost it CPU on small hosts);
# - every other call ends at once.
# Talking to the daemon's Unix socket is a small Perl program (perl-base is
# part of every Debian and Ubuntu system, and starts in a few milliseconds,
# where Python takes about 20 on a small host), or where there is no Perl,
# the same in Python: standard library only, without site packages (-IS),
# nothing but its C socket module. Both speak HTTP/1.0 on the hook socket
# and read a plain-text answer: "allowed", or "refused" and the reasons.

RUN_DIR="/run/virtpolicy"
HOOK_FAILURE="open"  # when the daemon does not answer: open allows, closed refuses
CHAINED="/etc/libvirt/hooks/qemu.chained-by-virtpolicy"
TIMEOUT_S="20"  # well above the store's 5 s busy timeout, though admission never waits for it
# A socket that is not there, or that nothing listens on, and a daemon that
# answers 503 (starting: not connected to libvirtd yet), are tried again every
# 0.1 s for this long: the daemon restarting (an upgrade) is away about a
# second, and a start meanwhile waits for it instead of following HOOK_FAILURE.
RETRY_S="5"
CLIENT="auto"  # perl, python, or auto: perl where /usr/bin/perl is, else python
UNIX_STREAM="1 1"  # AF_UNIX and SOCK_STREAM on the installing machine, for perl
# The package's hook is not a file to edit (it goes when the package goes):
# its HOOK_FAILURE is set in this file instead, root's to write, read here.
SETTINGS=""
if [ -n "$SETTINGS" ] && [ -r "$SETTINGS" ]; then
    # shellcheck disable=SC1090 # the operator's settings
    . "$SETTINGS"
    case "$HOOK_FAILURE" in
        open | closed) ;;
        *) HOOK_FAILURE="open" ;;
    esac
fi

if [ $# -lt 3 ]; then
    echo "usage: qemu GUEST OPERATION PHASE [EXTRA]" >&2
    exit 2
fi
XML=""
if [ "$2 $3" = "migrate begin" ]; then
    XML=$(cat)  # read once: the chained hook and the vCPU count both need it
fi
if [ -x "$CHAINED" ]; then
    if [ "$2 $3" = "migrate begin" ]; then
        printf '%s\n' "$XML" | "$CHAINED" "$@" || exit $?
    else
        "$CHAINED" "$@" || exit $?
    fi
fi

# The vCPUs a domain XML runs with: <vcpu current='N'>, else <vcpu>N (empty: none).
vcpus_of() {
    tag=$(printf '%s' "$1" | grep -o "<vcpu[ >][^<]*" | head -n 1)
    n=$(printf '%s' "$tag" | sed -n "s/.*current=['\"]\([0-9]*\)['\"].*/\1/p")
    [ -n "$n" ] || n=$(printf '%s' "$tag" | sed -n 's/.*>[[:space:]]*\([0-9]*\)[[:space:]]*$/\1/p')
    printf '%s' "$n"
}

ask() {
    if [ "$CLIENT" = perl ] || { [ "$CLIENT" = auto ] && [ -x /usr/bin/perl ]; }; then
        ask_perl "$@"
    else
        ask_python "$@"
    fi
}

ask_perl() {
    # shellcheck disable=SC2086 # two numbers
    /usr/bin/perl - $UNIX_STREAM "$RUN_DIR" "$HOOK_FAILURE" "$TIMEOUT_S" "$RETRY_S" "$@" <<'PERL'
# No modules (loading Socket alone costs perl 10 ms): the socket constants
# come from the installing machine, and the address is packed by hand.
my ($af_unix, $sock_stream, $run_dir, $failure, $timeout, $retry, $mode, $guest, @rest) = @ARGV;
$SIG{PIPE} = 'IGNORE';  # a write to a socket the daemon reset fails with EPIPE instead

# The argument as one URL path segment (its bytes, percent-encoded).
sub quote {
    my ($text) = @_;
    $text =~ s/([^A-Za-z0-9\-._~])/sprintf("%%%02X", ord($1))/ge;
    return $text;
}

# One HTTP/1.0 request over the daemon's socket: (status, body), or (0, why)
# when the socket is away (not there, or nothing listens: a restart), or the
# daemon let the connection go unanswered (it was stopping: a connection still
# waiting to be accepted is reset when its socket closes).
sub attempt {
    my ($method, $path) = @_;
    socket(my $sock, $af_unix, $sock_stream, 0) or die "socket: $!\n";
    if (!connect($sock, pack('S a*', $af_unix, "$run_dir/virtpolicy-hook.sock\0"))) {
        return (0, "$!") if $!{ENOENT} || $!{ECONNREFUSED};
        die "$!\n";
    }
    my $request = "$method $path HTTP/1.0\r\nHost: virtpolicy\r\nAccept: text/plain\r\n\r\n";
    if (!defined syswrite($sock, $request)) {
        return (0, "$!") if $!{EPIPE} || $!{ECONNRESET};
        die "$!\n";
    }
    my $answer = '';
    while (1) {
        my $got = sysread($sock, $answer, 65536, length $answer);
        return (0, "$!") if !defined $got && $!{ECONNRESET} && $answer eq '';
        die "$!\n" unless defined $got;
        last if $got == 0;
    }
    close $sock;
    return (0, 'the daemon closed the connection unanswered') if $answer eq '';
    my ($head, $body) = split /\r\n\r\n/, $answer, 2;
    $body = '' unless defined $body;
    my ($status) = $head =~ m{^HTTP/\S+ (\d+)};
    return (defined $status ? $status : -1, $body);
}

# The request, tried again every 0.1 s for $retry s while the daemon is away
# or not ready (503: it is starting, or cannot tell yet); the body of a 2xx.
sub call {
    my ($method, $path) = @_;
    local $SIG{ALRM} = sub { die "timed out after $timeout s\n" };
    alarm $timeout;
    my ($status, $body);
    for (my $tries = $retry * 10; ; $tries--) {
        ($status, $body) = attempt($method, $path);
        last if ($status != 0 && $status != 503) || $tries <= 0;
        select(undef, undef, undef, 0.1);
    }
    alarm 0;
    die "$body\n" if $status == 0;
    die "it answered HTTP $status: " . substr($body, 0, 200) . "\n"
        unless $status >= 200 && $status < 300;
    return $body;
}

# The daemon cannot say (it does not answer, or cannot tell): hook_failure decides.
sub undecided {
    my ($what, $why) = @_;
    if ($failure eq 'closed') {
        print STDERR "virtpolicy $what ($why); hook_failure=closed refuses $guest\n";
        exit 1;
    }
    print STDERR "virtpolicy: $what ($why); going on\n";
    exit 0;
}

if ($mode eq 'report') {    # in the background: the daemon also hears libvirt's events
    eval { call('POST', join('/', '/v1/hook', map { quote($_) } $guest, @rest)) };
    exit 0;
}
# admission (before a start) or migration (on the destination, before a migration,
# with the guest's vCPU count when the XML gave one)
my $query = (@rest && $rest[0] =~ /^[0-9]{1,6}$/) ? "?vcpus=$rest[0]" : '';
my $answer = eval { call('GET', '/v1/guests/' . quote($guest) . "/$mode$query") };
if (!defined $answer) {
    (my $why = $@) =~ s/\s+$//;
    undecided('daemon does not answer', $why);
}
my ($verdict, $reasons) = split /\n/, $answer, 2;
$reasons = '' unless defined $reasons;
s/^\s+|\s+$//g for $verdict, $reasons;
undecided('cannot tell', $reasons) if $verdict eq 'unknown';
if ($verdict ne 'allowed') {
    my $why = $reasons ne '' ? $reasons : "virtpolicy refuses $guest";
    print STDERR "$why\n";
    exit 1;
}
exit 0;
PERL
}

ask_python() {
    /usr/bin/python3 -IS - "$RUN_DIR" "$HOOK_FAILURE" "$TIMEOUT_S" "$RETRY_S" "$@" <<'PYTHON'
import sys
import time as _time
import _socket

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text):
    """``text`` as one URL path segment."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def attempt(run_dir, timeout, method, path):
    """One HTTP/1.0 request over the daemon's socket: (status, body); status 0
    when the socket is away (not there, or nothing listens: a restart)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(run_dir + "/virtpolicy-hook.sock")
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            return 0, str(exc)
        request = f"{method} {path} HTTP/1.0\r\nHost: virtpolicy\r\nAccept: text/plain\r\n\r\n"
        chunks = []
        try:
            sock.sendall(request.encode())
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if chunks:
                raise
            return 0, str(exc)  # let go unanswered: the daemon was stopping
    finally:
        sock.close()
    if not chunks:
        return 0, "the daemon closed the connection unanswered"
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else -1
    return status, body.decode(errors="replace")


def call(run_dir, timeout, retry, method, path):
    """The request, tried again every 0.1 s for ``retry`` s while the daemon is
    away or not ready (503: starting, or cannot tell yet); the body of a 2xx."""
    tries = int(retry * 10)
    while True:
        status, body = attempt(run_dir, timeout, method, path)
        if (status not in (0, 503)) or tries <= 0:
            break
        tries -= 1
        _time.sleep(0.1)
    if status == 0:
        raise OSError(body)
    if not 200 <= status < 300:
        raise OSError(f"it answered HTTP {status}: {body[:200]}")
    return body


def undecided(failure, guest, what, why):
    """The daemon cannot say (it does not answer, or cannot tell): hook_failure decides."""
    if failure == "closed":
        print(f"virtpolicy {what} ({why}); hook_failure=closed refuses {guest}", file=sys.stderr)
        return 1
    print(f"virtpolicy: {what} ({why}); going on", file=sys.stderr)
    return 0


def main(run_dir, failure, timeout, retry, mode, guest, *rest):
    timeout, retry = float(timeout), float(retry)
    if mode == "report":  # in the background: the daemon also hears libvirt's events
        path = "/".join(["/v1/hook", quote(guest), *map(quote, rest)])
        try:
            call(run_dir, timeout, retry, "POST", path)
        except OSError:
            pass
        return 0
    vcpus = rest[0] if rest and rest[0].isascii() and rest[0].isdigit() else ""
    query = f"?vcpus={vcpus}" if vcpus and len(vcpus) <= 6 else ""
    try:  # admission (before a start) or migration (on the destination)
        path = f"/v1/guests/{quote(guest)}/{mode}{query}"
        answer = call(run_dir, timeout, retry, "GET", path)
    except OSError as exc:
        return undecided(failure, guest, "daemon does not answer", exc)
    verdict, _, reasons = answer.partition("\n")
    if verdict.strip() == "unknown":
        return undecided(failure, guest, "cannot tell", reasons.strip())
    if verdict.strip() != "allowed":
        print(reasons.strip() or f"virtpolicy refuses {guest}", file=sys.stderr)
        return 1
    return 0


sys.exit(main(*sys.argv[1:]))
PYTHON
}

case "$2 $3" in
    "prepare begin")
        ask admission "$1"
        exit $?
        ;;
    "migrate begin")
        # On the destination, with the domain XML on standard input (and the
        # XML to use expected on standard output: an empty answer keeps it).
        ask migration "$1" "$(vcpus_of "$XML")"
        exit $?
        ;;
esac
case "$2" in
    stopped | release | restore | reconnect)
        ask report "$1" "$2" "$3" >/dev/null 2>&1 &
        ;;
esac
exit 0
