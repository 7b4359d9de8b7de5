"""`reranker flows` and `reranker demo`: the lifecycle as Prefect flows, and the loop closed through HTTP."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, existing_path, fail, settings, table

if TYPE_CHECKING:
    from reranker.settings import Settings

group = typer.Typer(help="The lifecycle as Prefect flows: run one now, or serve them on schedules.",
                    no_args_is_help=True)  # fmt: skip


class FlowName(StrEnum):
    ingest = "ingest"
    build_features = "build-features"
    train = "train"
    canary = "canary"
    drift = "drift"
    retrain = "retrain"
    retention = "retention"


def prefect_settings(data_dir: Path | None) -> Settings:
    from reranker.settings import apply_prefect_env

    conf = settings(data_dir)
    apply_prefect_env(conf.layout)  # before Prefect is imported
    return conf


@group.command("run")
def flows_run(
    name: Annotated[FlowName, typer.Argument(help="Which flow.")],
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    path: Annotated[Path | None, typer.Option(help="Interaction file or folder (ingest, retrain).")] = None,
    documents: Annotated[
        Path | None, typer.Option(help="Document catalog Parquet (ingest, retrain).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Boosting rounds (train, retrain).", min=1)] = 150,
    days: Annotated[
        float | None,
        typer.Option(help="Keep this many days (retention; default RERANKER_RETENTION_DAYS).", min=0.001),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one flow now (against PREFECT_API_URL if set, else Prefect's temporary local API)."""
    if name is FlowName.ingest and path is None:
        fail("ingest needs --path")
    for given, what in ((path, "interaction file or folder"), (documents, "catalog file")):
        if given is not None:
            existing_path(given, what)
    conf = prefect_settings(data_dir)
    from flows.local_api import warm_start

    warm_start()
    from flows.lifecycle import FLOWS

    data = str(conf.data_dir.resolve())
    params: dict[str, Any] = {"data_dir": data}
    if name in (FlowName.train, FlowName.canary, FlowName.drift, FlowName.retrain):
        params["model_id"] = model_id
    if name in (FlowName.train, FlowName.retrain):
        params["rounds"] = rounds
    if name is FlowName.retention:
        if days is None and conf.retention_days is None:
            fail("retention needs --days or RERANKER_RETENTION_DAYS")
        params["days"] = days
    if name in (FlowName.ingest, FlowName.retrain) and path is not None:
        params["path"] = str(path.resolve())
        if documents is not None:
            params["documents"] = str(documents.resolve())
    state = FLOWS[name.value](**params, return_state=True)
    if not state.is_completed():
        fail(f"flow {name.value} ended {state.name}: {state.message}", code=1)
    result = state.result()
    emit({"flow": name.value, "state": state.name, "result": result}, as_json)
    if not as_json:
        training = result.get("training", result) if isinstance(result, dict) else {}
        trained = (
            f": {model_id} v{training['version']} alias {training['alias'] or 'none'}"
            if "version" in training
            else ""
        )
        typer.echo(f"flow {name.value} {state.name}{trained} (--json for the whole result)")


@group.command("serve")
def flows_serve(
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the deployments: retrain, canary analysis and drift check on their crons (RERANKER_*_CRON), the rest on
    demand, and retrain on every drift event (needs `prefect server start` and PREFECT_API_URL)."""
    conf = prefect_settings(data_dir)
    from flows.deployments import serve as serve_deployments

    serve_deployments(conf, model_id)


def demo(
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    traffic: Annotated[int, typer.Option(help="Requests served by v1 alone.", min=100)] = 10_000,
    canary_traffic: Annotated[
        int, typer.Option(help="Requests per canary round (v1 and v2 at once), then an analysis.", min=100)
    ] = 10_000,
    canary_rounds: Annotated[
        int,
        typer.Option(
            help="Canary rounds at most (the analysis waits for the next one when inconclusive).", min=1
        ),
    ] = 3,
    canary_share: Annotated[
        float, typer.Option(help="Share of users the canary serves.", min=0.05, max=0.95)
    ] = 0.5,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The loop closed: train v1 -> serve over HTTP -> simulated users -> logged clicks -> retrain v2 -> canary ->
    canary analysis -> promote or roll back. Prints the online click rates with intervals."""
    conf = prefect_settings(data_dir)
    from flows.local_api import warm_start

    warm_start()
    from flows.demo import DemoPlan, run_demo

    plan = DemoPlan(model_id=model_id, traffic_requests=traffic, canary_requests=canary_traffic,
                    canary_rounds=canary_rounds, canary_share=canary_share, seed=conf.seed)  # fmt: skip
    try:
        result = run_demo(conf, plan, progress=not as_json, say=(lambda m: None) if as_json else typer.echo)
    except RuntimeError as exc:
        fail(str(exc), code=1)
    emit(result, as_json)
    if not as_json:
        table("online click rate (clicks per shown item, 95% CI resampling users)",
               [{"ranker": k, "requests": v["requests"], "click rate": f"{v['mean']:.4f} [{v['low']:.4f}, "
                 f"{v['high']:.4f}]"} for k, v in result["click_rate"].items()])  # fmt: skip
        for look in result["looks"]:
            d = look["difference"]
            typer.echo(f"after {look['requests']} canary requests: v{result['v2']} - v{result['v1']} "
                       f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] ({result['confidence'] * 100:.4g}%) "
                       f"-> {look['decision']}")  # fmt: skip
        typer.echo(f"decision: {result['decision']} ({result['reason']})")
        typer.echo(f"aliases now: {result['aliases']}")
        typer.echo(f"MLflow UI:  {result['mlflow_ui']}")
        typer.echo(f"Prefect UI: {result['prefect_ui']}")
