"""`hashsvc keys ...`: create, list and revoke API keys.

`create` prints the token once, on stdout (as JSON with the key's record); only its
SHA-256 is stored, so a lost token is replaced, never recovered.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hashsvc.cli.common import DataDir, emit, errors_to_exit, say, settings_for

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key's holder.")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated: match, review, admin, metrics.")
    ] = "match",
    data_dir: DataDir = None,
) -> None:
    """Create a key and print its token (shown only this once)."""
    from hashsvc import keys
    from hashsvc.store import Store

    settings = settings_for(data_dir)
    with errors_to_exit(), Store.open(settings.db_path) as store:
        key, token = keys.create_key(store, name, scopes)
    emit({**key.to_json(), "token": token})
    say("store the token now: it is not kept and cannot be shown again")


@app.command("ls")
def ls(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    data_dir: DataDir = None,
) -> None:
    """List keys (never their tokens), one JSON line each."""
    from hashsvc import keys
    from hashsvc.store import Store

    settings = settings_for(data_dir)
    with errors_to_exit(), Store.open(settings.db_path) as store:
        for key in keys.list_keys(store, include_revoked=all_):
            emit(key.to_json())


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name or its hsk_ prefix.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: every worker refuses it within a second."""
    from hashsvc import keys
    from hashsvc.store import Store

    settings = settings_for(data_dir)
    with errors_to_exit(), Store.open(settings.db_path) as store:
        emit(keys.revoke_key(store, name).to_json())
