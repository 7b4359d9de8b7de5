"""The lifecycle as Prefect flows: thin wiring, each task one call into the domain rooms.

ingest -> build_features -> train_and_register (-> canary alias) -> canary_analysis (promote / roll back), and
drift_check (emits `reranker.drift.detected`, which an automation turns into a retrain run); `retrain` chains
ingest, build_features and train_and_register. Settings are read here, at the entry point, from the `data_dir`
parameter and the environment.

Safety: no task moves the `champion` alias except a canary promotion after its analysis; a failed step raises, so
the flow run ends Failed with the reason and the aliases (hence serving) stay as they were.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from reranker.settings import Settings, apply_runtime_env

DRIFT_EVENT = "reranker.drift.detected"


class BatchRejected(RuntimeError):
    """Validation quarantined rows of the batch: the flow fails with the report."""


def _settings(data_dir: str | None) -> Settings:
    apply_runtime_env()
    return Settings(data_dir=Path(data_dir)) if data_dir else Settings()


def lake_fingerprint(settings: Settings) -> str:
    """Changes whenever the lake or the catalog changes (names, sizes and modification times of their files)."""
    layout = settings.layout
    files = sorted(layout.interactions.rglob("*.parquet")) + (
        [layout.documents] if layout.documents.exists() else []
    )
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(layout.root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _features_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    settings: Settings = parameters["settings"]
    path = settings.feature_set_path
    declared = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "none"
    return f"features-{settings.layout.root}-{lake_fingerprint(settings)}-{declared}"


# ---------------------------------------------------------------- tasks (one domain call each)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass on a second try (I/O, a busy lock): a user's mistake (a missing or unreadable
    file, rejected rows) fails at once with its one-line message."""
    from expectations.ingest import IngestError

    try:
        state.result()
    except (IngestError, BatchRejected, FileNotFoundError, ValueError):
        return False
    except Exception:
        return True
    return False


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE,
      task_run_name="ingest {path}")  # fmt: skip
def ingest_batch(
    settings: Settings, path: str, fail_on_quarantine: bool = True, documents: str | None = None
) -> dict[str, Any]:
    """Validate (Great Expectations) and land a file or folder of interaction events (and upsert the catalog)."""
    from expectations.ingest import ingest
    from reranker.lake import read_catalog, upsert_documents

    if documents:
        upsert_documents(settings.layout.documents, read_catalog(Path(documents)))

    summary = ingest(Path(path), settings.layout, **settings.ingest_options())
    get_run_logger().info("%s: %d rows read, %d added, %d already in the lake, %d duplicates, %d quarantined%s; "
                          "Data Docs: %s", path, summary.rows_read, summary.added, summary.already_present,
                          summary.duplicates, summary.quarantined,
                          f" ({summary.reasons})" if summary.quarantined else "", summary.data_docs)  # fmt: skip
    report = summary.to_dict()
    if summary.quarantined and fail_on_quarantine:
        raise BatchRejected(
            f"{summary.quarantined} of {summary.rows_read} rows of {path} failed validation and were quarantined "
            f"({summary.quarantine_path}); reasons: {summary.reasons}; Data Docs: {summary.data_docs}"
        )
    return report


@task(cache_key_fn=_features_cache_key, persist_result=True, task_run_name="build features")
def build_features(settings: Settings) -> dict[str, Any]:
    """Offline feature tables from the lake, Feast apply, incremental materialization to the online store.
    Cached on the lake's fingerprint: an unchanged lake is not rebuilt, across restarts too."""
    from feature_repo.store import apply, build_from_lake, materialize
    from reranker.featureset import load_feature_set

    layout = settings.layout
    build = build_from_lake(layout, load_feature_set(settings.feature_set_path), settings.seed)
    store = apply(
        layout.feast,
        layout.feature_tables,
        settings.feast_redis,
        settings.feast_registry,
        settings.ray_cluster(),
    )
    result = {
        "rows": build.rows,
        "feature_set": build.feature_set,
        "version": build.feature_set_version,
        "materialize": materialize(store, layout.feature_tables, incremental=True),
    }
    get_run_logger().info("features %s %s: %s rows per table; materialized: %s", build.feature_set,
                          build.feature_set_version, build.rows, result["materialize"])  # fmt: skip
    return result


@task(cache_policy=NO_CACHE, task_run_name="train {model_id}")
def train_model(
    settings: Settings, model_id: str, rounds: int, policy: dict[str, Any] | None
) -> dict[str, Any]:
    """Training set -> train -> evaluate against champion and fallback -> gates -> register (+ alias if passed)."""
    import pandas as pd

    from feature_repo.store import open_store, serving_files
    from models.gates import GatePolicy
    from models.registry import Registry
    from models.training import TrainPlan, train_and_register
    from reranker.lake import LakeEvents

    layout = settings.layout
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    plan = TrainPlan.create(
        model_id,
        settings.seed,
        rounds,
        settings.train_threads,
        GatePolicy(**(policy or {})),
        settings.ray_cluster(),
        settings.training_memory_gb,
    )
    catalog = pd.read_parquet(layout.documents) if layout.documents.exists() else None
    logger = get_run_logger()
    outcome = train_and_register(LakeEvents(layout.interactions), open_store(layout.feast),
                                 Registry(settings.tracking_uri(), create=True), plan, layout.feature_tables,
                                 serving_files(layout.feature_tables), layout.mlflow / "artifacts", catalog=catalog,
                                 say=logger.info)  # fmt: skip
    learned = outcome.report.metrics["learned"].get("ndcg@10")
    logger.info("%s v%s: %s (NDCG@10 %s on %d test lists; gates: %s)", model_id, outcome.version,
                f"alias {outcome.alias}" if outcome.alias else "no alias (failed gates)",
                f"{learned.mean:.4f}" if learned else "-", outcome.report.n_lists,
                ", ".join(f"{k} {g.status.value}" for k, g in outcome.gates.items()))  # fmt: skip
    return outcome.summary()


@task(cache_policy=NO_CACHE, task_run_name="canary analysis {model_id}")
def analyze_canary(settings: Settings, model_id: str, confidence: float | None = None) -> dict[str, Any]:
    """Canary vs champion on the traffic both served; promote or roll back (or wait for more traffic)."""
    from models.canary import CanaryPolicy, analyze, apply_decision, read_served_lists
    from models.registry import CANARY, CHAMPION, Registry
    from reranker.lake import read_interactions

    registry = Registry(settings.tracking_uri())
    aliases = registry.aliases(model_id)
    if CANARY not in aliases or CHAMPION not in aliases:
        return {"decision": "none", "reason": f"no canary to analyse (aliases: {aliases or 'none'})"}
    policy = CanaryPolicy(min_lists=settings.canary_min_lists, max_lists=settings.canary_max_lists,
                          max_loss=settings.canary_max_loss, confidence=confidence or settings.canary_confidence,
                          seed=settings.seed)  # fmt: skip
    report = analyze(read_served_lists(settings.layout.served), read_interactions(settings.layout.interactions),
                     model_id, aliases[CHAMPION], aliases[CANARY], policy)  # fmt: skip
    after = apply_decision(registry, report)
    return {**report.to_dict(), "aliases_after": after}


@task(cache_policy=NO_CACHE, task_run_name="drift check {model_id}")
def check_drift(settings: Settings, model_id: str, recent_days: float) -> dict[str, Any]:
    """Recent interactions against the champion's training window (Great Expectations, with Data Docs)."""
    import json

    import pandas as pd

    from expectations.drift import check_drift as run_check
    from expectations.drift import split_windows
    from models.card import CARD_FILE, ModelCard
    from models.registry import CHAMPION, Registry
    from reranker.lake import read_interactions

    registry = Registry(settings.tracking_uri())
    version = registry.aliases(model_id).get(CHAMPION)
    if version is None:
        raise ValueError(f"model {model_id!r} has no champion: nothing to compare against")
    run_id = registry.client.get_model_version(model_id, version).run_id
    if run_id is None:
        raise ValueError(f"model {model_id!r} version {version} has no training run: no model card to read")
    card = ModelCard.model_validate(json.loads(Path(registry.client.download_artifacts(
        run_id, f"serving/{CARD_FILE}")).read_text()))  # fmt: skip
    window = (str(card.data_start), str(card.data_end))
    layout = settings.layout
    reference, recent = split_windows(read_interactions(layout.interactions), window, recent_days)  # type: ignore[arg-type]
    catalog = pd.read_parquet(layout.documents) if layout.documents.exists() else None
    report = run_check(reference, recent, layout.gx, catalog)
    return {**report.to_dict(), "model_id": model_id, "champion_version": version}


@task(cache_policy=NO_CACHE)
def remove_old_data(settings: Settings, days: float) -> dict[str, Any]:
    """Every day of events older than the retention, everywhere events are kept (`reranker.retention`)."""
    from reranker.retention import apply_retention

    report = apply_retention(settings.layout, days)
    get_run_logger().info("retention %g days (before %s): removed %s", days, report.cutoff, report.counts())
    return {"cutoff": report.cutoff, "removed": report.removed}


# ---------------------------------------------------------------- flows


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


@flow(name="ingest", log_prints=True)
def ingest_flow(path: str, documents: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Validate and land new interaction files; fails (with the report) when rows were quarantined."""
    return ingest_batch(_settings(data_dir), path, documents=documents)


@flow(name="build_features")
def build_features_flow(data_dir: str | None = None) -> dict[str, Any]:
    return build_features(_settings(data_dir))


@flow(name="train_and_register")
def train_and_register_flow(
    model_id: str = "reranker",
    rounds: int = 150,
    data_dir: str | None = None,
    gates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate, gate and register; a passing model becomes the canary (champion if there is none)."""
    summary = train_model(_settings(data_dir), model_id, rounds, gates)
    create_markdown_artifact(key=f"{model_id.replace('_', '-')}-training", markdown=summary["report"],
                             description="evaluation report of the latest training run (also in MLflow)")  # fmt: skip
    return summary


@flow(name="canary_analysis")
def canary_analysis_flow(
    model_id: str = "reranker", data_dir: str | None = None, confidence: float | None = None
) -> dict[str, Any]:
    """Land what the stage logged, then compare canary and champion and promote or roll back (`confidence`: the
    difference's interval level, default RERANKER_CANARY_CONFIDENCE)."""
    settings = _settings(data_dir)
    if settings.layout.landing.exists():
        ingest_batch(settings, str(settings.layout.landing), fail_on_quarantine=False)
    result = analyze_canary(settings, model_id, confidence)
    get_run_logger().info("canary analysis of %s: %s (%s)", model_id, result["decision"], result["reason"])
    if result["decision"] != "none":
        rows = [{"variant": v, "version": result[v]["version"], "lists": result[v]["lists"],
                 "click rate": "{mean:.4f} [{low:.4f}, {high:.4f}]".format(**result[v]["click_rate"])}
                for v in ("champion", "canary")]  # fmt: skip
        create_markdown_artifact(key=f"{model_id.replace('_', '-')}-canary",
                                 markdown=f"# canary: {result['decision']}\n\n{result['reason']}\n\n"
                                 + _markdown_table(rows), description="latest canary analysis")  # fmt: skip
    return result


@flow(name="drift_check")
def drift_check_flow(
    model_id: str = "reranker", recent_days: float | None = None, data_dir: str | None = None
) -> dict[str, Any]:
    """On drift, emits `reranker.drift.detected` (an automation runs the retrain deployment on it)."""
    settings = _settings(data_dir)
    result = check_drift(settings, model_id, recent_days or settings.drift_recent_days)
    get_run_logger().info("drift check of %s: %s", model_id, result["summary"])
    if result["drifted"]:
        emit_event(
            event=DRIFT_EVENT,
            resource={"prefect.resource.id": f"reranker.model.{model_id}", "reranker.model_id": model_id},
            payload={"summary": result["summary"], "data_docs": result["data_docs"]},
        )
    return result


@flow(name="retention")
def retention_flow(days: float | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Remove what is older than RERANKER_RETENTION_DAYS (or `days`), then rebuild the features from what is left, so
    the offline tables and the online store no longer hold it either."""
    settings = _settings(data_dir)
    keep = days if days is not None else settings.retention_days
    if keep is None:
        raise ValueError("no retention configured: set RERANKER_RETENTION_DAYS (or pass days)")
    result = remove_old_data(settings, keep)
    if (
        any(result["removed"].values())
        and settings.feature_set_path.exists()
        and settings.layout.interactions.exists()
    ):
        result["features"] = build_features(settings)
    return result


@flow(name="retrain")
def retrain_flow(
    model_id: str = "reranker", path: str | None = None, documents: str | None = None, rounds: int = 150,
    data_dir: str | None = None, gates: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The whole chain: land new data (a path, and what the stage logged), features, train, gate, register."""
    settings = _settings(data_dir)
    ingested = []
    if path:
        ingested.append(ingest_batch(settings, path, documents=documents))
    if settings.layout.landing.exists():
        ingested.append(ingest_batch(settings, str(settings.layout.landing), fail_on_quarantine=False))
    features = build_features(settings)
    summary = train_and_register_flow(model_id=model_id, rounds=rounds, data_dir=data_dir, gates=gates)
    return {"ingested": ingested, "features": features, "training": summary}


FLOWS: dict[str, Any] = {
    "ingest": ingest_flow,
    "build-features": build_features_flow,
    "train": train_and_register_flow,
    "canary": canary_analysis_flow,
    "drift": drift_check_flow,
    "retrain": retrain_flow,
    "retention": retention_flow,
}
