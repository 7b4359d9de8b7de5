"""The `reranker` command: every user action. Heavy libraries are imported inside commands, so --help is instant."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from reranker.settings import Settings

app = typer.Typer(help="Learned reranking: logged interactions -> features -> LambdaRank -> registry -> stage.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
data_app = typer.Typer(
    help="Load the bundled datasets (MovieLens-100K, Open Bandit, synthetic).", no_args_is_help=True
)
features_app = typer.Typer(help="Build, register and materialize Feast features.", no_args_is_help=True)
experiment_app = typer.Typer(help="Studies with a known answer (position bias, off-policy estimation).",
                             no_args_is_help=True)  # fmt: skip
models_app = typer.Typer(help="Registered models: versions, aliases, tags.", no_args_is_help=True)
users_app = typer.Typer(help="Privacy: remove a user's data.", no_args_is_help=True)
flows_app = typer.Typer(help="The lifecycle as Prefect flows: run one now, or serve them on schedules.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(experiment_app, name="experiment")
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")
app.add_typer(flows_app, name="flows")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Overrides RERANKER_DATA_DIR.")]


class Dataset(StrEnum):
    movielens = "movielens"
    obd = "obd"
    synthetic = "synthetic"


def apply_runtime_env() -> None:
    from reranker.settings import apply_runtime_env as apply

    apply()


def _settings(data_dir: Path | None) -> Settings:
    from reranker.settings import Settings

    apply_runtime_env()
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _emit(payload: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    Console(width=160).print(table)


# ---------------------------------------------------------------- data


@data_app.command("load")
def data_load(
    dataset: Dataset,
    size: Annotated[
        int, typer.Option(help="Synthetic: number of events (1k .. 10M).", min=1_000, max=10_000_000)
    ] = 100_000,
    seed: Annotated[int, typer.Option(help="Synthetic: world seed.")] = 7,
    campaign: Annotated[str, typer.Option(help="OBD: all, men or women.")] = "all",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a dataset's interaction events and document catalog under <data>/raw/<name>/."""
    from reranker.datasets import DatasetError, movielens, obd
    from reranker.lake import atomic_write_parquet

    layout = _settings(data_dir).layout
    name = {"movielens": "movielens", "obd": f"obd-{campaign}", "synthetic": f"synthetic-{size}-s{seed}"}[
        dataset
    ]
    out = layout.raw / name
    try:
        if dataset is Dataset.synthetic:
            from reranker.synthetic import SyntheticWorld, WorldConfig, write_dataset

            meta = write_dataset(
                SyntheticWorld.create(WorldConfig(seed=seed)), size, out, progress=not as_json
            )
            events_path, n = out / "interactions", int(meta["events"])  # type: ignore[call-overload]
        else:
            events, catalog = (
                movielens(layout.cache) if dataset is Dataset.movielens else obd(layout.cache, campaign)
            )
            events_path = out / "interactions" / "events.parquet"
            atomic_write_parquet(events, events_path)
            atomic_write_parquet(catalog, out / "documents.parquet")
            n = len(events)
    except DatasetError as exc:
        _fail(str(exc))
    result = {
        "dataset": name,
        "events": n,
        "interactions": str(events_path),
        "documents": str(out / "documents.parquet"),
    }
    _emit(result, as_json)
    if not as_json:
        typer.echo(f"{n:,} events -> {events_path}")
        typer.echo(f"next: reranker ingest {events_path} --documents {out / 'documents.parquet'}")


# ---------------------------------------------------------------- ingest


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A JSONL, CSV or Parquet file, or a directory of them.")],
    documents: Annotated[Path | None, typer.Option(help="A document catalog (Parquet/CSV) to merge.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate interaction logs with Great Expectations and land good rows in the lake.

    Exit codes: 0 all good; 1 some rows quarantined (good rows kept); 2 unreadable input (nothing written).
    """
    from expectations.ingest import IngestError
    from expectations.ingest import ingest as run_ingest
    from reranker.lake import upsert_documents

    settings = _settings(data_dir)
    layout = settings.layout
    n_docs = None
    if documents is not None:
        import pandas as pd

        if not documents.exists():
            _fail(f"{documents}: no such file")
        try:
            catalog = pd.read_csv(documents) if documents.suffix == ".csv" else pd.read_parquet(documents)
            n_docs = upsert_documents(layout.documents, catalog)
        except (ValueError, OSError) as exc:
            _fail(f"{documents}: {exc}")
    try:
        summary = run_ingest(path, layout, **settings.ingest_options(), progress=not as_json)
    except IngestError as exc:
        _fail(str(exc))
    payload = {**summary.to_dict(), "catalog_documents": n_docs}
    _emit(payload, as_json)
    if not as_json:
        typer.echo(f"read {summary.rows_read:,} rows: {summary.added:,} added, {summary.already_present:,} already "
                   f"in the lake, {summary.quarantined:,} quarantined ({summary.seconds:.1f}s)")  # fmt: skip
        for reason, count in summary.reasons.items():
            typer.echo(f"  {count:>8,}  {reason}")
        for warning in summary.warnings:
            typer.echo(f"  warning: {warning}")
        if summary.quarantine_path:
            typer.echo(f"quarantine: {summary.quarantine_path}")
        typer.echo(f"data docs: {summary.data_docs}")
    if summary.rows_read == 0:
        _fail(f"{path}: empty input, nothing ingested", code=1)
    if summary.quarantined:
        raise typer.Exit(1)


# ---------------------------------------------------------------- features


def _build_features(settings: Settings) -> dict[str, Any]:
    from feature_repo.store import build_from_lake

    return vars(build_from_lake(settings.layout, settings.seed))


def _apply_feast(settings: Settings) -> Any:
    """Feast apply of the layout's repo on the configured backends (Redis online store, SQL registry)."""
    from feature_repo.store import apply

    return apply(
        settings.layout.feast, settings.layout.feature_tables, settings.feast_redis, settings.feast_registry
    )


@features_app.command("build")
def features_build(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Compute the point-in-time feature tables from the lake."""
    from feature_repo.store import FeatureStoreError

    try:
        result = _build_features(_settings(data_dir))
    except FeatureStoreError as exc:
        _fail(str(exc))
    _emit(result, as_json)
    if not as_json:
        _table("offline feature tables", [{"view": k, "rows": v} for k, v in result["rows"].items()])


@features_app.command("apply")
def features_apply(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Build the tables and register entities, views and the feature service with Feast."""
    from feature_repo.definitions import FEATURE_SERVICE, feature_refs
    from feature_repo.store import FeatureStoreError

    settings = _settings(data_dir)
    try:
        build = _build_features(settings)
        _apply_feast(settings)
    except FeatureStoreError as exc:
        _fail(str(exc))
    result = {"feature_service": FEATURE_SERVICE, "features": len(feature_refs()), "tables": build["rows"],
              "repo": str(settings.layout.feast)}  # fmt: skip
    _emit(result, as_json)
    if not as_json:
        typer.echo(
            f"applied feature service {FEATURE_SERVICE!r} ({len(feature_refs())} features) in {result['repo']}"
        )


@features_app.command("materialize")
def features_materialize(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Load the newest feature values into the online store."""
    from feature_repo.store import FeatureStoreError, materialize, open_store

    settings = _settings(data_dir)
    try:
        result = materialize(open_store(settings.layout.feast), settings.layout.feature_tables)
    except FeatureStoreError as exc:
        _fail(str(exc))
    _emit(result, as_json)
    if not as_json:
        typer.echo(f"materialized to the online store in {result['seconds']}s")


# ---------------------------------------------------------------- train / evaluate


def _training_inputs(settings: Settings) -> tuple[Any, Any, Any]:
    from feature_repo.store import open_store
    from models.registry import Registry
    from reranker.lake import read_interactions

    layout = settings.layout
    events = read_interactions(layout.interactions)
    if events.empty:
        _fail("the lake is empty: run `reranker ingest` first")
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    return events, open_store(layout.feast), Registry(settings.tracking_uri())


def _interval_rows(table: dict[str, dict[str, Any]], head: str, signed: bool) -> list[dict[str, Any]]:
    """One row per ranker (or pair): each metric as `mean [low, high]`."""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    rows = []
    for name, ms in table.items():
        row: dict[str, Any] = {head: name}
        for m, iv in ms.items():
            row[m] = f"{fmt.format(iv['mean'])} [{fmt.format(iv['low'])}, {fmt.format(iv['high'])}]"
        rows.append(row)
    return rows


def _print_outcome(summary: dict[str, Any]) -> None:
    _table(f"rolling-origin evaluation: {summary['n_lists']} lists, mean [95% CI, users resampled]",
           _interval_rows(summary["metrics"], "ranker", signed=False))  # fmt: skip
    _table(
        "learned vs baselines (paired)",
        _interval_rows(summary["differences"], "paired difference", signed=True),
    )
    _table(
        "gates",
        [{"gate": k, "passed": g["passed"], "detail": g["detail"]} for k, g in summary["gates"].items()],
    )


def _plan(settings: Settings, model_id: str, rounds: int = 150) -> Any:
    from models.training import TrainPlan

    return TrainPlan.create(model_id, settings.seed, rounds, settings.train_threads)


def _train_and_register(settings: Settings, model_id: str, rounds: int, progress: bool) -> Any:
    from feature_repo.store import FeatureStoreError, serving_files
    from models.training import train_and_register

    layout = settings.layout
    events, store, registry = _training_inputs(settings)
    try:
        return train_and_register(events, store, registry, _plan(settings, model_id, rounds),
                                  serving_files(layout.feature_tables), layout.mlflow / "artifacts", progress=progress)  # fmt: skip
    except (ValueError, FeatureStoreError) as exc:
        _fail(str(exc))


@app.command()
def train(
    model_id: Annotated[str, typer.Option("--model-id", help="Registered model name.")] = "reranker",
    rounds: Annotated[int, typer.Option(help="Boosting rounds.", min=1)] = 150,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train LambdaRank on the lake, evaluate it against the baselines and the champion, register it in MLflow."""
    outcome = _train_and_register(_settings(data_dir), model_id, rounds, progress=not as_json)
    summary = outcome.summary()
    _emit(summary, as_json)
    if not as_json:
        _print_outcome(summary)
        typer.echo(
            f"registered {model_id} v{outcome.version}: alias {outcome.alias or 'none (failed gates)'}"
        )


@app.command()
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

    settings = _settings(data_dir)
    events, store, registry = _training_inputs(settings)
    try:
        ev = evaluate_procedure(events, store, registry, _plan(settings, model_id), progress=not as_json)
    except (ValueError, FeatureStoreError) as exc:
        _fail(str(exc))
    summary = {**ev.report.to_dict(), "gates": {k: vars(g) for k, g in ev.gates.items()},
               "champion_version": ev.champion.version if ev.champion else None}  # fmt: skip
    _emit(summary, as_json)
    if not as_json:
        _print_outcome(summary)


# ---------------------------------------------------------------- experiments


@experiment_app.command("position-bias")
def experiment_position_bias(
    seeds: Annotated[int, typer.Option(help="Number of world seeds.", min=1)] = 3,
    requests: Annotated[int, typer.Option(help="Training requests per seed.", min=500)] = 20_000,
    as_json: JsonOpt = False,
) -> None:
    """NDCG@10 on the true relevance: naive click training vs position-aware vs an oracle on true grades."""
    from models.experiments import position_bias

    apply_runtime_env()
    results = [position_bias(seed=7 + i, n_train=requests) for i in range(seeds)]
    rows = [{**vars(r), "recovered": r.recovered} for r in results]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    _emit({"runs": rows, "mean": mean}, as_json)
    if not as_json:
        _table(
            "position bias: NDCG@10 on true relevance (all 30 candidates)", [*rows, {"seed": "mean", **mean}]
        )


@experiment_app.command("obd")
def experiment_obd(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Open Bandit Dataset: on-policy click rates, and IPS/SNIPS/DR estimates of BTS from the random log."""
    from models.experiments import obd_ope

    rows = obd_ope(_settings(data_dir).layout.cache)
    _emit(rows, as_json)
    if not as_json:
        _table("OBD: click rate of BTS estimated from the random log", [
            {"campaign": r["campaign"], "random (on-policy)": r["ctr_random"], "BTS (on-policy)": r["ctr_bts"],
             **{n.upper(): f"{r[n]:.5f} [{r[n + '_low']:.5f}, {r[n + '_high']:.5f}] err {r[n + '_rel_error']:.0%}"
                for n in ("ips", "snips", "dr")}} for r in rows])  # fmt: skip


# ---------------------------------------------------------------- models


@models_app.command("list")
def models_list(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")] = "reranker",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions with their aliases, gate verdicts and key metrics."""
    from models.registry import Registry

    settings = _settings(data_dir)
    registry = Registry(settings.tracking_uri())
    if not registry.exists(model_id):
        _fail(f"model {model_id!r} is not registered")
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases(model_id).items():
        by_version.setdefault(version, []).append(alias)
    rows = [{"version": mv.version, "aliases": ",".join(by_version.get(str(mv.version), [])) or "-",
             "ndcg@10": mv.tags.get("ndcg_at_10", "-"), "data_window": mv.tags.get("data_window", "-"),
             "canary": mv.tags.get("canary.decision", "-"),
             "rejected": (mv.tags.get("rejected_reason") or mv.tags.get("rolled_back_reason") or "-")[:60]}
            for mv in registry.versions(model_id)]  # fmt: skip
    _emit(rows, as_json)
    if not as_json:
        _table(f"model {model_id}", rows)


@models_app.command("promote")
def models_promote(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make VERSION the champion (the old one becomes previous_champion); serving follows within its poll."""
    _move_alias(data_dir, as_json, "promote", model_id, version)


@models_app.command("rollback")
def models_rollback(
    model_id: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why; tagged on the version rolled back.")] = "manual rollback",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put previous_champion back as champion; serving follows within its poll."""
    _move_alias(data_dir, as_json, "rollback", model_id, reason)


def _move_alias(data_dir: Path | None, as_json: bool, action: str, model_id: str, arg: str) -> None:
    from models.registry import AliasError, ModelNotFound, Registry, promote, rollback

    registry = Registry(_settings(data_dir).tracking_uri())
    try:
        aliases = (
            promote(registry, model_id, arg) if action == "promote" else rollback(registry, model_id, arg)
        )
    except (AliasError, ModelNotFound) as exc:
        _fail(str(exc))
    _emit({"model_id": model_id, "aliases": aliases}, as_json)
    if not as_json:
        typer.echo(f"{model_id}: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())))


# `reranker promote` / `reranker rollback`: the same commands at the top level.
app.command("promote")(models_promote)
app.command("rollback")(models_rollback)


# ---------------------------------------------------------------- flows


class FlowName(StrEnum):
    ingest = "ingest"
    build_features = "build-features"
    train = "train"
    canary = "canary"
    drift = "drift"
    retrain = "retrain"


def _prefect_settings(data_dir: Path | None) -> Settings:
    from reranker.settings import apply_prefect_env

    settings = _settings(data_dir)
    apply_prefect_env(settings.layout)  # before Prefect is imported
    return settings


@flows_app.command("run")
def flows_run(
    name: Annotated[FlowName, typer.Argument(help="Which flow.")],
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    path: Annotated[Path | None, typer.Option(help="Interaction file or folder (ingest, retrain).")] = None,
    documents: Annotated[
        Path | None, typer.Option(help="Document catalog Parquet (ingest, retrain).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Boosting rounds (train, retrain).", min=1)] = 150,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one flow now (against PREFECT_API_URL if set, else Prefect's temporary local API)."""
    if name is FlowName.ingest and path is None:
        _fail("ingest needs --path")
    settings = _prefect_settings(data_dir)
    from flows.local_api import warm_start

    warm_start()
    from flows.lifecycle import FLOWS

    data = str(settings.data_dir.resolve())
    params: dict[str, Any] = {"data_dir": data}
    if name in (FlowName.train, FlowName.canary, FlowName.drift, FlowName.retrain):
        params["model_id"] = model_id
    if name in (FlowName.train, FlowName.retrain):
        params["rounds"] = rounds
    if name in (FlowName.ingest, FlowName.retrain) and path is not None:
        params["path"] = str(path.resolve())
        if documents is not None:
            params["documents"] = str(documents.resolve())
    state = FLOWS[name.value](**params, return_state=True)
    if not state.is_completed():
        _fail(f"flow {name.value} ended {state.name}: {state.message}", code=1)
    result = state.result()
    _emit({"flow": name.value, "state": state.name, "result": result}, as_json)
    if not as_json:
        training = result.get("training", result) if isinstance(result, dict) else {}
        trained = (
            f": {model_id} v{training['version']} alias {training['alias'] or 'none'}"
            if "version" in training
            else ""
        )
        typer.echo(f"flow {name.value} {state.name}{trained} (--json for the whole result)")


@flows_app.command("serve")
def flows_serve(
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the deployments: retrain, canary analysis and drift check on their crons (RERANKER_*_CRON), the rest on
    demand, and retrain on every drift event (needs `prefect server start` and PREFECT_API_URL)."""
    settings = _prefect_settings(data_dir)
    from flows.deployments import serve as serve_deployments

    serve_deployments(settings, model_id)


@app.command()
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
    settings = _prefect_settings(data_dir)
    from flows.local_api import warm_start

    warm_start()
    from flows.demo import DemoPlan, run_demo

    plan = DemoPlan(model_id=model_id, traffic_requests=traffic, canary_requests=canary_traffic,
                    canary_rounds=canary_rounds, canary_share=canary_share, seed=settings.seed)  # fmt: skip
    try:
        result = run_demo(
            settings, plan, progress=not as_json, say=(lambda m: None) if as_json else typer.echo
        )
    except RuntimeError as exc:
        _fail(str(exc), code=1)
    _emit(result, as_json)
    if not as_json:
        _table("online click rate (clicks per shown item, 95% CI resampling users)",
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


# ---------------------------------------------------------------- users


@users_app.command("delete")
def users_delete(
    user_id: Annotated[
        str, typer.Argument(help="The user id as your systems know it (hashed here with the salt).")
    ],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a user's events and features: lake, offline feature tables, online store, quarantine, logs."""
    from feature_repo.store import FeatureStoreError, check_user_deletion, delete_online_user, open_store
    from reranker.lake import delete_user_lines, delete_user_rows

    settings = _settings(data_dir)
    layout = settings.layout
    key = settings.user_key(user_id)
    store = open_store(layout.feast) if (layout.feast / "feature_store.yaml").exists() else None
    if store is not None:
        try:
            check_user_deletion(store)  # before anything is deleted: never half a user
        except FeatureStoreError as exc:
            _fail(str(exc))
    removed = {
        "lake_events": delete_user_rows(layout.interactions, key),
        "feature_table_rows": delete_user_rows(layout.feature_tables, key),
        "quarantined_rows": delete_user_lines(layout.quarantine, key),
        "served_list_log": delete_user_lines(layout.served, key),
        "landing_zone": delete_user_lines(layout.landing, key),
        "online_rows": 0,
    }
    if store is not None:
        removed["online_rows"] = delete_online_user(store, key)
    _emit({"user_key": key, "removed": removed}, as_json)
    if not as_json:
        _table(f"removed user {key}", [{"where": k, "rows": v} for k, v in removed.items()])


# ---------------------------------------------------------------- serve


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    data_dir: DataDirOpt = None,
) -> None:
    """Start the rerank stage (BentoML): POST /rerank, /metrics, /livez, /readyz, /docs."""
    import os
    import subprocess

    settings = _settings(data_dir)
    if not settings.layout.documents.exists() or not (settings.layout.feast / "feature_store.yaml").exists():
        _fail(
            "no features to serve yet: run `reranker quickstart` (or ingest + features apply + materialize)"
        )
    env = {**os.environ, "RERANKER_DATA_DIR": str(settings.data_dir.resolve())}
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:Reranker",
        "--host",
        host,
        "--port",
        str(port),
    ]
    raise typer.Exit(subprocess.call(cmd, env=env))


# ---------------------------------------------------------------- schema / quickstart


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schema.")] = Path("schemas/events.json"),
) -> None:
    """Write the JSON Schema of the event contracts."""
    from reranker.contracts import write_json_schemas

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_schemas(out)
    typer.echo(f"wrote {out}")


@app.command()
def quickstart(
    model_id: Annotated[str, typer.Option("--model-id")] = "reranker",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the embedded default: MovieLens-100K -> ingest -> features -> train -> evaluate -> register."""
    import time

    settings = _settings(data_dir)
    layout = settings.layout
    started = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name: str) -> None:
        steps[name] = round(time.perf_counter() - started - sum(steps.values()), 2)
        if not as_json:
            typer.secho(f"[{time.perf_counter() - started:6.1f}s] {name} done", fg=typer.colors.GREEN)

    from expectations.ingest import ingest as run_ingest
    from feature_repo.store import materialize
    from reranker.datasets import movielens
    from reranker.lake import atomic_write_parquet, upsert_documents

    events, catalog = movielens(layout.cache)
    raw = layout.raw / "movielens" / "interactions" / "events.parquet"
    atomic_write_parquet(events, raw)
    step("load MovieLens-100K")
    summary = run_ingest(raw, layout, **settings.ingest_options())
    upsert_documents(layout.documents, catalog)
    if summary.quarantined:
        _fail(f"{summary.quarantined} MovieLens rows failed validation; see {summary.quarantine_path}", 1)
    step("ingest + validate (Great Expectations)")
    _build_features(settings)
    store = _apply_feast(settings)
    step("features (Feast apply)")
    materialize(store, layout.feature_tables)
    step("materialize (online store)")
    outcome = _train_and_register(settings, model_id, 150, progress=not as_json)
    step("train + evaluate + register")
    result = {**outcome.summary(), "ingest": summary.to_dict(), "steps": steps,
              "total_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    _emit(result, as_json)
    if not as_json:
        _print_outcome(result)
        typer.echo(f"\nregistered {model_id} v{outcome.version} with alias {outcome.alias or 'none'} "
                   f"in {result['total_seconds']}s")  # fmt: skip
        typer.echo(f"MLflow UI:  mlflow ui --backend-store-uri {settings.tracking_uri()}")
        typer.echo(f"Data Docs:  {summary.data_docs}")


if __name__ == "__main__":
    app()
