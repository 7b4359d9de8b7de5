"""`reranker train` and `reranker evaluate`: the learned model against the baselines and the champion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, Steps, emit, fail, settings, table

if TYPE_CHECKING:
    from reranker.settings import Settings

NO_MODEL_PASSED = 3  # exit code: trained and registered, but it passed no gate set (no alias)


def training_inputs(conf: Settings) -> tuple[Any, Any, Any, Any]:
    """The lake's reader (read once the checks pass, dropped once the lists are built), the feature store, the
    registry and the catalog."""
    import pandas as pd

    from feature_repo.store import FeatureStoreError, open_store
    from models.registry import Registry
    from reranker.lake import LakeEvents

    layout = conf.layout
    events = LakeEvents(layout.interactions)
    if not events.count():
        fail("the lake is empty: run `reranker ingest` first")
    if not (layout.feature_tables / "manifest.json").exists():
        fail("no features built yet: run `reranker features apply && reranker features materialize` first")
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    try:
        store = open_store(layout.feast)
    except FeatureStoreError as exc:
        fail(str(exc))
    catalog = pd.read_parquet(layout.documents) if layout.documents.exists() else None
    return events, store, Registry(conf.tracking_uri(), create=True), catalog


def interval_rows(block: dict[str, dict[str, Any]], head: str, signed: bool) -> list[dict[str, Any]]:
    """One row per ranker (or pair): each metric as `mean [low, high]`."""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    rows = []
    for name, ms in block.items():
        row: dict[str, Any] = {head: name}
        for m, iv in ms.items():
            row[m] = f"{fmt.format(iv['mean'])} [{fmt.format(iv['low'])}, {fmt.format(iv['high'])}]"
        rows.append(row)
    return rows


def print_outcome(summary: dict[str, Any]) -> None:
    table(f"rolling-origin evaluation: {summary['n_lists']} lists, mean [95% CI, users resampled]",
          interval_rows(summary["metrics"], "ranker", signed=False))  # fmt: skip
    table(
        "learned vs baselines (paired)",
        interval_rows(summary["differences"], "paired difference", signed=True),
    )
    table("gates", [{"gate": k, "verdict": g.get("status", "pass" if g["passed"] else "fail"), "detail": g["detail"]}
                    for k, g in summary["gates"].items()])  # fmt: skip
    if "fallback" in summary:
        typer.echo(f"fallback: {summary['fallback']['name']} ({summary['fallback']['reason']})")


def plan(conf: Settings, model_id: str, rounds: int = 150) -> Any:
    from models.training import TrainPlan

    return TrainPlan.create(model_id, conf.seed, rounds, conf.train_threads, ray=conf.ray_cluster(),
                            memory_gb=conf.training_memory_gb)  # fmt: skip


def train_and_register(conf: Settings, model_id: str, rounds: int, steps: Steps) -> Any:
    from feature_repo.store import FeatureStoreError, serving_files
    from models.training import train_and_register as run

    layout = conf.layout
    events, store, registry, catalog = training_inputs(conf)
    try:
        return run(events, store, registry, plan(conf, model_id, rounds), layout.feature_tables,
                   serving_files(layout.feature_tables), layout.mlflow / "artifacts", catalog=catalog,
                   progress=not steps.quiet, say=steps.say)  # fmt: skip
    except (ValueError, FeatureStoreError) as exc:
        fail(str(exc))


def explain_rejection(model_id: str, outcome: Any) -> str:
    from models.card import GateStatus

    failed = [f"{k}: {g.detail}" for k, g in outcome.gates.items() if g.status is GateStatus.failed]
    return (f"{model_id} v{outcome.version} was registered without an alias: it failed "
            + "; ".join(failed) + ". Nothing changed in serving (the champion, if any, keeps serving; with none, the "
            f"stage serves the first-stage order). What to do: log more traffic (lists with clicks) or declare more "
            f"of your data in the feature set, then train again; `reranker models list {model_id}` shows the versions")  # fmt: skip


def train(
    model_id: Annotated[str, typer.Option("--model-id", help="Registered model name.")] = "reranker",
    rounds: Annotated[int, typer.Option(help="Boosting rounds.", min=1)] = 150,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train LambdaRank on the lake, evaluate it against the baselines and the champion, register it in MLflow.
    Exit 3 when the model passed no gates (registered without an alias)."""
    steps = Steps(as_json)
    outcome = train_and_register(settings(data_dir), model_id, rounds, steps)
    summary = outcome.summary()
    emit(summary, as_json)
    if not as_json:
        print_outcome(summary)
        typer.echo(
            f"registered {model_id} v{outcome.version}: alias {outcome.alias or 'none (failed gates)'}"
        )
    if not outcome.passed:
        if not as_json:
            typer.secho(explain_rejection(model_id, outcome), fg=typer.colors.RED, err=True)
        raise typer.Exit(NO_MODEL_PASSED)


def evaluate(
    model_id: Annotated[
        str, typer.Option("--model-id", help="Compare against this model's champion.")
    ] = "reranker",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rolling-origin evaluation of the training procedure against the first stage, the rule-based ranker and the
    champion (when one exists), without registering anything."""
    from feature_repo.store import FeatureStoreError
    from models.training import evaluate_procedure

    conf = settings(data_dir)
    steps = Steps(as_json)
    events, store, registry, catalog = training_inputs(conf)
    try:
        ev = evaluate_procedure(events, store, registry, plan(conf, model_id), conf.layout.feature_tables, catalog,
                                progress=not as_json, say=steps.say)  # fmt: skip
    except (ValueError, FeatureStoreError) as exc:
        fail(str(exc))
    summary = {**ev.report.to_dict(), "gates": {k: {"passed": g.passed, "status": g.status.value, "detail": g.detail}
                                               for k, g in ev.gates.items()},
               "fallback": {"name": ev.fallback[0], "reason": ev.fallback[1]},
               "families": [vars(c) for c in ev.families],
               "champion_version": ev.champion.version if ev.champion else None}  # fmt: skip
    emit(summary, as_json)
    if not as_json:
        print_outcome(summary)
