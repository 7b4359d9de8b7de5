"""`reranker keys ...`: the stage's API keys (shown once at creation, kept hashed)."""

from __future__ import annotations

from typing import Annotated

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, fail, settings, table

group = typer.Typer(help="API keys of the stage: create, list, revoke.", no_args_is_help=True)


@group.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key (a service, a team).")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="rerank, interactions, metrics or admin (repeat for several)."),
    ],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="A model id the key may use (repeat; default all).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Requests a second (default RERANKER_RATE_PER_KEY)."),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print its token once: only its hash is kept. The stage sees it within a second."""
    from reranker.access import AccessError, KeyStore, Scope, describe

    try:
        scopes = [Scope(s) for s in scope]
    except ValueError:
        fail(f"unknown scope in {scope}: use {', '.join(s.value for s in Scope)}")
    try:
        key, token = KeyStore(settings(data_dir).layout.keys).create(name, scopes, model or None, rate)
    except AccessError as exc:
        fail(str(exc))
    emit({**describe(key), "token": token}, as_json)
    if not as_json:
        table("API key created", [describe(key)])
        typer.echo(f"token (shown once; send it as `Authorization: Bearer <token>`):\n{token}")


@group.command("list")
def keys_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Every key: id, name, scopes, models, rate, created and revoked (never the secret)."""
    from reranker.access import KeyStore, describe

    rows = [describe(k) for k in KeyStore(settings(data_dir).layout.keys).read().keys]
    emit(rows, as_json)
    if not as_json:
        if rows:
            table("API keys", rows)
        else:
            typer.echo("no API keys: `reranker keys create --name NAME --scope rerank --scope interactions`")


@group.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `reranker keys list`).")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: the stage refuses it within a second, without a restart."""
    from reranker.access import AccessError, KeyStore, describe

    try:
        key = KeyStore(settings(data_dir).layout.keys).revoke(key_id)
    except AccessError as exc:
        fail(str(exc))
    emit(describe(key), as_json)
    if not as_json:
        typer.echo(f"revoked key {key.key_id} ({key.name})")
