"""`reranker quickstart`: the main job on the embedded default, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reranker.cli.features import apply_feast, build
from reranker.cli.output import DataDirOpt, JsonOpt, Steps, emit, fail, settings
from reranker.cli.training import explain_rejection, print_outcome, train_and_register

if TYPE_CHECKING:
    from reranker.settings import Settings


def quickstart(
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the embedded default: MovieLens-100K (moved to end yesterday) -> ingest -> declared features
    -> materialize -> train -> evaluate -> register."""
    conf = settings(data_dir)
    layout = conf.layout
    steps = Steps(as_json)
    from expectations.ingest import ingest as run_ingest
    from feature_repo.store import materialize
    from reranker.datasets import movielens, shift_to_now
    from reranker.featureset import BUNDLED, install_feature_set
    from reranker.lake import atomic_write_parquet, upsert_documents

    events, catalog = movielens(layout.cache)
    events, catalog, moved = shift_to_now(events, catalog)
    raw = layout.raw / "movielens" / "interactions" / "events.parquet"
    atomic_write_parquet(events, raw)
    atomic_write_parquet(catalog, layout.raw / "movielens" / "documents.parquet")
    note = install_feature_set(BUNDLED / "movielens.yaml", conf.feature_set_path,
                               layout.raw / "movielens" / "featureset.yaml")  # fmt: skip
    steps.say(note)
    steps.done(f"load MovieLens-100K (timestamps moved by {moved.days} days to end yesterday)")
    summary = run_ingest(raw, layout, **conf.ingest_options(), progress=not as_json)
    upsert_documents(layout.documents, catalog)
    if summary.quarantined:
        fail(f"{summary.quarantined} MovieLens rows failed validation; see {summary.quarantine_path}", 1)
    steps.done("ingest + validate (Great Expectations)")
    built = build(conf, steps)
    store = apply_feast(conf, steps)
    steps.done(f"features ({built['feature_set']}: {built['inputs']} model inputs; Feast apply)")
    materialize(store, layout.feature_tables)
    steps.done("materialize (online store)")
    outcome = train_and_register(conf, model_id, 150, steps)
    steps.done("train + evaluate + register")
    key_file = first_key(conf)
    result = {**outcome.summary(), "ingest": summary.to_dict(), "steps": steps.laps,
              "total_seconds": round(sum(steps.laps.values()), 1), "api_key_file": str(key_file)}  # fmt: skip
    emit(result, as_json)
    if not as_json:
        print_outcome(result)
        typer.echo(f"\nregistered {model_id} v{outcome.version} with alias {outcome.alias or 'none'} "
                   f"in {result['total_seconds']}s")  # fmt: skip
        typer.echo(f"MLflow UI:  uv run mlflow ui --backend-store-uri {conf.tracking_uri()}")
        typer.echo(f"Data Docs:  {summary.data_docs}")
        typer.echo(f"API key:    {key_file.read_text().strip()}  (also in {key_file}; "
                   "`reranker keys create` makes others)")  # fmt: skip
        typer.echo(
            f"serve it:   uv run reranker serve --port 3000{'' if data_dir is None else f' --data-dir {data_dir}'}"
        )
    if not outcome.passed:
        if not as_json:
            typer.secho(explain_rejection(model_id, outcome), fg=typer.colors.RED, err=True)
        raise typer.Exit(3)


def first_key(conf: Settings) -> Path:
    """The embedded default's first API key (all scopes), created once; its token kept beside the key file (mode
    600) so the README's calls can read it. A production stage makes its own keys and keeps no token on disk."""
    import os

    from reranker.access import KeyStore, Scope

    path = conf.layout.keys.with_name("quickstart-key")
    if not path.exists():
        _, token = KeyStore(conf.layout.keys).create("quickstart", [Scope.admin])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
    return path
