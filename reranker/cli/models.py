"""`reranker models`: registered versions, their aliases and tags; promote and roll back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, fail, settings, table

if TYPE_CHECKING:
    from models.registry import AliasStore, Registry

group = typer.Typer(help="Registered models: versions, aliases, tags.", no_args_is_help=True)


@group.command("list")
def models_list(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")] = "reranker",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions with their aliases, gate verdicts and key metrics."""
    registry = quick_registry(data_dir)
    if not registry.exists(model_id):
        fail(f"model {model_id!r} is not registered")
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases(model_id).items():
        by_version.setdefault(version, []).append(alias)
    rows = [{"version": mv.version, "aliases": ",".join(by_version.get(str(mv.version), [])) or "-",
             "ndcg@10": mv.tags.get("ndcg_at_10", "-"), "feature_set": mv.tags.get("feature_set", "-"),
             "fallback": mv.tags.get("fallback", "-"), "data_window": mv.tags.get("data_window", "-"),
             "canary": mv.tags.get("canary.decision", "-"),
             "rejected": (mv.tags.get("rejected_reason") or mv.tags.get("rolled_back_reason") or "-")[:60]}
            for mv in registry.versions(model_id)]  # fmt: skip
    emit(rows, as_json)
    if not as_json:
        table(f"model {model_id}", rows)


@group.command("promote")
def models_promote(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make VERSION the champion (the old one becomes previous_champion); serving follows within its poll."""
    move_alias(data_dir, as_json, "promote", model_id, version)


@group.command("rollback")
def models_rollback(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why; tagged on the version rolled back.")] = "manual rollback",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put previous_champion back as champion; serving follows within its poll."""
    move_alias(data_dir, as_json, "rollback", model_id, reason)


def open_registry(data_dir: Path | None) -> Registry:
    """The registry of the settings, or a one-line error when its database is missing (never created here)."""
    from models.registry import Registry, RegistryMissing

    try:
        return Registry(settings(data_dir).tracking_uri())
    except RegistryMissing as exc:
        fail(str(exc))


def quick_registry(data_dir: Path | None) -> AliasStore:
    """MLflow's tables when this release knows their schema (an answer in about a second), else MLflow's client."""
    from models.registry import RegistryMissing
    from models.registry_tables import open_tables

    try:
        tables = open_tables(settings(data_dir).tracking_uri())
    except RegistryMissing as exc:
        fail(str(exc))
    return tables if tables is not None else open_registry(data_dir)


def move_alias(data_dir: Path | None, as_json: bool, action: str, model_id: str, arg: str) -> None:
    from models.registry import AliasError, ModelNotFound, promote, rollback

    registry = quick_registry(data_dir)
    try:
        aliases = (
            promote(registry, model_id, arg) if action == "promote" else rollback(registry, model_id, arg)
        )
    except (AliasError, ModelNotFound) as exc:
        fail(str(exc))
    emit({"model_id": model_id, "aliases": aliases}, as_json)
    if not as_json:
        typer.echo(f"{model_id}: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())))
