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
    models,
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
app.add_typer(flows.group, name="flows")
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

__all__ = ["app"]
