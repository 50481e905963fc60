"""``virtpolicy token ...``: API tokens for callers over TCP."""

from __future__ import annotations

import json

import click

from virtpolicy.api.auth import ROLES, digest, new_token
from virtpolicy.cli import output
from virtpolicy.cli.app import App, cli, fail_usage, pass_app


@cli.group()
def token() -> None:
    """Create, list and delete API tokens (kept hashed in the store)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@pass_app
def token_create(app: App, name: str, role: str) -> None:
    """Create token NAME and print its secret: it is shown this once only."""
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise fail_usage(f'token: "{name}" is not a name (letters, digits, - and _, at most 64)')
    secret = new_token()
    app.store.add_token(name, role, digest(secret), app.actor)  # type: ignore[arg-type]
    click.echo(secret)


@token.command("list")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def token_list(app: App, fmt: str) -> None:
    """List tokens (names and roles; secrets are not stored)."""
    rows = [[t.name, t.role, t.created_at, t.created_by] for t in app.store.tokens()]
    if fmt == "json":
        keys = ("name", "role", "created_at", "created_by")
        click.echo(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return
    click.echo(output.table(["NAME", "ROLE", "CREATED", "BY"], rows), nl=False)


@token.command("delete")
@click.argument("name")
@pass_app
def token_delete(app: App, name: str) -> None:
    """Revoke token NAME."""
    app.store.delete_token(name)
    click.echo(f"token {name}: deleted")
