"""The `reranker` command: every user action, one module per command group. Heavy libraries are imported inside
commands, so `reranker --help` is instant."""

from __future__ import annotations

import typer

from reranker.cli import (
    data,
    experiments,
    features,
    flows,
    ingest,
    keys,
    models,
    pipelines,
    quickstart,
    serving,
    training,
    users,
)

app = typer.Typer(help="Learned reranking: logged interactions -> declared features -> LambdaRank -> registry -> stage.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
app.add_typer(data.group, name="data")
app.add_typer(features.group, name="features")
app.add_typer(experiments.group, name="experiment")
app.add_typer(models.group, name="models")
app.add_typer(users.group, name="users")
app.add_typer(keys.group, name="keys")
app.add_typer(flows.group, name="flows")
app.add_typer(pipelines.group, name="pipeline")
app.command()(ingest.ingest)
app.command()(training.train)
app.command()(training.evaluate)
app.command()(serving.serve)
app.command()(serving.schema)
app.command()(quickstart.quickstart)
app.command()(flows.demo)
# `reranker promote` / `reranker rollback`: the same commands at the top level
app.command("promote")(models.models_promote)
app.command("rollback")(models.models_rollback)


def main() -> None:
    """The console script: a setting that cannot be used is one line and exit 2, as every user error."""
    from models.registry import RegistryMissing
    from reranker.settings import SettingsError

    try:
        app()
    except (SettingsError, RegistryMissing) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


__all__ = ["app", "main"]
