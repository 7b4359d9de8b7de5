"""Schedules and the drift -> retrain automation against a real `prefect server start`.

A champion is trained on the first part of a synthetic world; then data whose first-stage scores changed scale
arrives. `reranker flows serve` runs the deployments; a drift check run against the server emits
`reranker.drift.detected`; the retrain deployment's trigger (an automation) starts a retrain run, which the serve
process executes to completion and which registers a new version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHOP_FEATURES, build_features, free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MODEL = "auto"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 180, "prefect server up", proc
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory, world, synthetic_events):
    """A champion trained on the first 70% of the world's time; the rest arrives with shifted scores."""
    from expectations.ingest import ingest
    from feature_repo import store as fs
    from models.gates import GatePolicy
    from models.registry import Registry
    from models.training import TrainPlan, train_and_register
    from reranker.lake import read_interactions, upsert_documents
    from reranker.settings import Settings
    from reranker.synthetic import documents_frame

    settings = Settings(data_dir=tmp_path_factory.mktemp("auto") / "data", hash_user_ids=False)
    layout = settings.layout
    ts = pd.to_datetime(synthetic_events["timestamp"], utc=True)
    cut = ts.quantile(0.7)
    layout.raw.mkdir(parents=True)
    synthetic_events[ts <= cut].to_parquet(layout.raw / "first.parquet")
    synthetic_events[ts > cut].assign(score=lambda f: f["score"] + 3.0).to_parquet(
        layout.raw / "later.parquet"
    )
    ingest(layout.raw / "first.parquet", layout, salt="s", hash_ids=False)
    upsert_documents(layout.documents, documents_frame(world))
    events = read_interactions(layout.interactions)
    layout.feature_set.write_text(SHOP_FEATURES.read_text())  # the declaration the flows will read
    store = build_features(layout, events)
    fs.materialize(store, layout.feature_tables)
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    plan = TrainPlan(model_id=MODEL, n_boot=100, folds=2, select_families=False,
                     gates=GatePolicy(min_lists=50, baselines=("rule_based",)))  # fmt: skip
    plan.train.num_boost_round = 30
    outcome = train_and_register(events, store, Registry(settings.tracking_uri(), create=True), plan, layout.feature_tables,
                                 {"segments.pkl": layout.feature_tables / "segments.pkl"}, layout.mlflow / "artifacts")  # fmt: skip
    assert outcome.alias == "champion"
    ingest(layout.raw / "later.parquet", layout, salt="s", hash_ids=False)
    return settings


def test_drift_event_triggers_the_retrain_deployment(prefect_server, site, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from models.registry import Registry

    versions_before = {str(mv.version) for mv in Registry(site.tracking_uri()).versions(MODEL)}
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path / "serve-home"),
           "RERANKER_DATA_DIR": str(site.data_dir), "RERANKER_HASH_USER_IDS": "false",
           "RERANKER_RETRAIN_CRON": "15 4 * * *"}  # fmt: skip
    serve = subprocess.Popen([sys.executable, "-m", "reranker.cli", "flows", "serve", "--model-id", MODEL], cwd=ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            # the serve process creates the deployments one after another: wait for the last ones too
            retrain, canary = wait_for(
                lambda: (client.read_deployment_by_name("retrain/retrain"),
                         client.read_deployment_by_name("canary_analysis/canary-analysis")), 180, "deployments", serve
            )  # fmt: skip
            assert [s.schedule.cron for s in retrain.schedules] == ["15 4 * * *"]
            assert canary.schedules and canary.schedules[0].schedule.cron == "0 * * * *"
            automations = wait_for(
                lambda: client.read_automations_by_name("retrain-on-drift"), 60, "automation", serve
            )
            assert automations[0].enabled
            time.sleep(5)  # let the automation's trigger be loaded by the server

            from flows.lifecycle import drift_check_flow

            result = drift_check_flow(model_id=MODEL, recent_days=30, data_dir=str(site.data_dir))
            assert result["drifted"], result["summary"]

            deployment_filter = DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id]))

            def finished_retrain():
                runs = client.read_flow_runs(deployment_filter=deployment_filter)
                done = [r for r in runs if r.state is not None and r.state.is_final()]
                return done[0] if done else None

            run = wait_for(finished_retrain, 420, "a retrain run triggered by the drift event", serve)
            # This process's events worker is bound to this server: flush it while the server is up (a later test
            # harness drains every events worker, and one left pointing at a stopped server hangs that drain).
            EventsWorker.drain_all()
        assert run.state.is_completed(), run.state.message
        assert run.parameters["model_id"] == MODEL
        versions_after = {str(mv.version) for mv in Registry(site.tracking_uri()).versions(MODEL)}
        assert versions_after - versions_before  # the triggered retrain registered a new version
    finally:
        serve.terminate()
        serve.wait(timeout=60)
