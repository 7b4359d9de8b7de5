"""Deployments of the lifecycle flows, with cron schedules and the drift -> retrain automation.

`reranker flows serve` serves them from one process (Prefect's `serve`): retrain, canary analysis and drift check on
the configured crons; ingest, build_features and train_and_register on demand (UI, `prefect deployment run`). The
retrain deployment carries an event trigger: each `reranker.drift.detected` event of a model (emitted by the drift
check) runs it for that model. Event triggers are automations, which need a Prefect server (`prefect server start`);
the temporary local API runs the schedules but not the automation.
"""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.lifecycle import (
    DRIFT_EVENT,
    build_features_flow,
    canary_analysis_flow,
    drift_check_flow,
    ingest_flow,
    retention_flow,
    retrain_flow,
    train_and_register_flow,
)
from reranker.settings import Settings

RETRAIN_ON_DRIFT = "retrain-on-drift"


def deployments(settings: Settings, model_id: str = "reranker") -> list[Any]:
    data_dir = str(settings.data_dir.resolve())
    common = {"model_id": model_id, "data_dir": data_dir}
    on_drift = DeploymentEventTrigger(
        name=RETRAIN_ON_DRIFT,
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": f"reranker.model.{model_id}"},
        parameters=common,
    )
    return [
        retrain_flow.to_deployment(
            name="retrain",
            cron=settings.retrain_cron,
            parameters=common,
            triggers=[on_drift],
            tags=["reranker"],
        ),
        canary_analysis_flow.to_deployment(
            name="canary-analysis", cron=settings.canary_cron, parameters=common, tags=["reranker"]
        ),
        drift_check_flow.to_deployment(
            name="drift-check", cron=settings.drift_cron, parameters=common, tags=["reranker"]
        ),
        ingest_flow.to_deployment(name="ingest", parameters={"data_dir": data_dir}, tags=["reranker"]),
        retention_flow.to_deployment(
            name="retention",
            cron=settings.retention_cron if settings.retention_days is not None else None,
            parameters={"data_dir": data_dir},
            tags=["reranker"],
        ),
        build_features_flow.to_deployment(
            name="build-features", parameters={"data_dir": data_dir}, tags=["reranker"]
        ),
        train_and_register_flow.to_deployment(
            name="train-and-register", parameters=common, tags=["reranker"]
        ),
    ]


def serve(settings: Settings, model_id: str = "reranker") -> None:
    """Blocks: runs scheduled and triggered flow runs in this process until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(settings, model_id))
