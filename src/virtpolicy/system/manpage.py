"""virtpolicy(1), written from the command line's own help.

The package runs ``python -m virtpolicy.system.manpage`` at build time, so the
page says what ``--help`` says, command by command, and cannot drift from it.
The date is the source's (``SOURCE_DATE_EPOCH``, which dpkg sets from the
changelog), so that two builds of one tree make the same page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click

from virtpolicy import __version__

FILES = [
    ("/etc/virtpolicy/virtpolicy.toml", "The daemon's settings (see virtpolicy serve --help)."),
    ("/var/lib/virtpolicy/policies.db", "The policy store on a host of its own (SQLite)."),
    ("/run/virtpolicy/virtpolicy.sock", "The daemon's read-write API, for root and the group."),
    ("/run/virtpolicy/virtpolicy-ro.sock", "The daemon's read-only API, for every local user."),
    ("/run/virtpolicy/virtpolicy-hook.sock", "Where libvirt's hook asks before a guest starts."),
    ("/etc/libvirt/hooks/qemu.d/virtpolicy", "The hook, as libvirt 6.5 and later find it."),
]

EXIT_STATUS = [
    ("0", "Done."),
    ("1", "The operation failed (or, for doctor, something needs doing)."),
    ("2", "Bad usage, or a policy that does not validate."),
    ("3", "A conflict: the policy changed since the revision given."),
]


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes escaped, hyphens as minus signs
    where they are options, and no line that starts with a control character."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    """Click's help text as roff paragraphs (a blank line starts a new one)."""
    blocks = [" ".join(b.split()) for b in text.split("\n\n") if b.strip() and b.strip() != "\b"]
    return "\n.PP\n".join(roff(b) for b in blocks)


def _options(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None or (ctx.parent is not None and param is command.get_help_option(ctx)):
            continue
        names, help_text = record
        yield ".TP"
        yield f"\\fB{roff(names)}\\fR"
        yield _paragraphs(help_text) if help_text else ""


def _commands(group: click.Group, ctx: click.Context, path: str) -> Iterator[str]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        usage = " ".join(command.collect_usage_pieces(sub))
        yield f'.SS "{roff(f"{path} {name} {usage}".strip())}"'
        yield _paragraphs(command.help or command.short_help or "")
        yield from _options(command, sub)
        if isinstance(command, click.Group):
            yield from _commands(command, sub, f"{path} {name}")


def page(cli: click.Group, when: float | None = None) -> str:
    """The whole page, for ``cli`` (virtpolicy's command group)."""
    ctx = click.Context(cli, info_name="virtpolicy")
    stamp = time.strftime("%Y-%m-%d", time.gmtime(time.time() if when is None else when))
    lines = [
        f'.TH VIRTPOLICY 1 "{stamp}" "virtpolicy {__version__}" "User Commands"',
        ".SH NAME",
        "virtpolicy \\- policy manager for libvirt guests",
        ".SH SYNOPSIS",
        ".B virtpolicy",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]...",
        ".SH DESCRIPTION",
        _paragraphs(cli.help or ""),
        ".SH OPTIONS",
        *_options(cli, ctx),
        ".SH COMMANDS",
        *_commands(cli, ctx, "virtpolicy"),
        ".SH EXIT STATUS",
    ]
    for status, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{status}\\fR", roff(meaning)]
    lines.append(".SH FILES")
    for path, meaning in FILES:
        lines += [".TP", f"\\fI{roff(path)}\\fR", roff(meaning)]
    lines += [".SH SEE ALSO", "\\fBvirsh\\fR(1), \\fBlibvirtd\\fR(8)", ""]
    return "\n".join(line for line in lines if line != "")
