"""Every lifecycle flow under `prefect_test_harness`, on a synthetic lake, with real Feast, MLflow and GE.

The module walks the lifecycle in order: ingest (and a corrupt batch), features (cached), train v1, a worse canary
rolled back by the canary analysis, a failed training that leaves the champion, drift, and the retrain chain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHOP_FEATURES

pytestmark = pytest.mark.integration

GATES = {"min_lists": 50, "baselines": ["rule_based"]}
MODEL = "flows"


@pytest.fixture(scope="module")
def site(tmp_path_factory, world, synthetic_events, prefect_harness):
    """A data dir and the raw files of a synthetic world (first 70% of its time: the rest comes later)."""
    from reranker.settings import Settings
    from reranker.synthetic import documents_frame

    root = tmp_path_factory.mktemp("site")
    ts = pd.to_datetime(synthetic_events["timestamp"], utc=True)
    cut = ts.quantile(0.7)
    raw = root / "raw"
    raw.mkdir()
    synthetic_events[ts <= cut].to_parquet(raw / "first.parquet")
    synthetic_events[ts > cut].to_parquet(raw / "later.parquet")
    documents_frame(world).to_parquet(raw / "documents.parquet")
    (root / "data").mkdir()
    (root / "data" / "featureset.yaml").write_text(
        SHOP_FEATURES.read_text()
    )  # the shop's declaration, active
    os.environ["RERANKER_HASH_USER_IDS"] = "false"  # the flows read settings from the environment
    yield Settings(data_dir=root / "data"), raw
    del os.environ["RERANKER_HASH_USER_IDS"]


def _aliases(settings):
    from models.registry import Registry

    return Registry(settings.tracking_uri()).aliases(MODEL)


def test_ingest_flow_lands_a_batch_and_fails_a_corrupt_one_with_its_report(site):
    from flows.lifecycle import ingest_flow

    settings, raw = site
    data = str(settings.data_dir)
    report = ingest_flow(
        path=str(raw / "first.parquet"), documents=str(raw / "documents.parquet"), data_dir=data
    )
    assert report["added"] > 10_000 and report["quarantined"] == 0
    bad = pd.read_parquet(raw / "later.parquet").head(50).assign(event_id=lambda f: "bad-" + f["event_id"])
    bad.loc[bad.index[:5], "position"] = -3
    bad.to_parquet(raw / "corrupt.parquet")
    state = ingest_flow(path=str(raw / "corrupt.parquet"), data_dir=data, return_state=True)
    assert state.is_failed()
    assert "5 of 50 rows" in state.message and "quarantined" in state.message and "position" in state.message


def test_build_features_flow_materializes_and_is_cached_on_the_lake(site):
    from flows.lifecycle import build_features_flow

    settings, _ = site
    first = build_features_flow(data_dir=str(settings.data_dir))
    assert first["materialize"]["mode"] == "full" and first["rows"]["user_activity"] > 0
    tables = sorted(settings.layout.feature_tables.rglob("*.parquet"))
    mtimes = [t.stat().st_mtime_ns for t in tables]
    state = build_features_flow(data_dir=str(settings.data_dir), return_state=True)
    assert state.result() == first  # the cached result: nothing rebuilt
    assert [t.stat().st_mtime_ns for t in tables] == mtimes


def test_train_and_register_flow_makes_the_first_passing_model_champion(site):
    from flows.lifecycle import train_and_register_flow

    settings, _ = site
    summary = train_and_register_flow(model_id=MODEL, rounds=30, data_dir=str(settings.data_dir), gates=GATES)
    assert summary["passed_gates"] and summary["alias"] == "champion"
    assert _aliases(settings) == {"champion": summary["version"]}


def test_drift_check_flow_compares_recent_data_with_the_champions_window(site):
    from flows.lifecycle import drift_check_flow, ingest_flow

    settings, raw = site
    data = str(settings.data_dir)
    with pytest.raises(ValueError, match=r"recent window has \d+ events \(need >= 200\)"):
        drift_check_flow(model_id=MODEL, recent_days=30, data_dir=data)
    later = pd.read_parquet(raw / "later.parquet")
    ts = pd.to_datetime(later["timestamp"], utc=True)
    middle = ts.quantile(0.5)
    later[ts <= middle].to_parquet(raw / "later-a.parquet")
    ingest_flow(path=str(raw / "later-a.parquet"), data_dir=data)
    quiet = drift_check_flow(model_id=MODEL, recent_days=30, data_dir=data)
    assert not quiet["drifted"], quiet["summary"]
    shifted = later[ts > middle].assign(score=lambda f: f["score"] + 3.0)  # the first stage changed its scale
    shifted.to_parquet(raw / "later-b.parquet")
    ingest_flow(path=str(raw / "later-b.parquet"), data_dir=data)
    result = drift_check_flow(model_id=MODEL, recent_days=30, data_dir=data)
    assert result["drifted"]
    assert [c["column"] for c in result["checks"] if not c["success"]] == ["score"]
    assert Path(result["data_docs"]).exists()


def _register_shuffled(settings) -> str:
    """A model trained on shuffled labels, let through as canary (as a permissive gate policy would)."""
    from feature_repo.store import open_store
    from models.gates import GatePolicy
    from models.lambdarank import train_lambdarank
    from models.registry import CANARY, Registry
    from models.training import TrainPlan, evaluate_procedure, make_card, register
    from reranker.lake import read_interactions

    registry = Registry(settings.tracking_uri())
    plan = TrainPlan(model_id=MODEL, n_boot=100, folds=2, select_families=False,
                     gates=GatePolicy(min_lists=50, baselines=()))  # fmt: skip
    plan.train.num_boost_round = 30
    ev = evaluate_procedure(read_interactions(settings.layout.interactions), open_store(settings.layout.feast),
                            registry, plan, settings.layout.feature_tables)  # fmt: skip
    frame = ev.data.frame.copy()
    frame["label"] = np.random.default_rng(0).permutation(frame["label"].to_numpy())
    model, _ = train_lambdarank(frame, ev.data.X, ev.data.features, plan.train)
    version, alias, _, _ = register(registry, plan, model, ev.report, make_card(plan, ev, True),
                                 {"segments.pkl": settings.layout.feature_tables / "segments.pkl"}, None)  # fmt: skip
    assert alias == CANARY
    return version


def _canary_traffic(settings, world, n: int) -> pd.DataFrame:
    """Simulated users through the stage's pipeline, logged exactly as the service logs them."""
    from feature_repo.store import open_store
    from models.registry import Registry
    from reranker.synthetic import simulate_traffic
    from serving.interactions import InteractionSink, LandingZone, PushLock, impressions
    from serving.model_cache import ModelCache
    from serving.online_features import OnlineFeatures
    from serving.pipeline import RerankPipeline
    from serving.schemas import InteractionBatch, RerankRequest
    from serving.served_log import JsonlLog

    layout = settings.layout
    store = open_store(layout.feast)
    features = OnlineFeatures(store, layout.feature_tables)
    models = ModelCache(lambda: Registry(settings.tracking_uri()), lambda: features.manifest, canary_share=0.5,
                        poll_seconds=3600)  # fmt: skip
    pipeline = RerankPipeline(features, models, settings.user_key, budget_ms=60_000)
    served, landing = JsonlLog(layout.served, "served"), LandingZone(layout.landing)
    sink = InteractionSink(landing, store, settings.user_key, PushLock(layout.online_push_lock),
                           lambda: features.manifest)  # fmt: skip

    def rerank(body):
        response, served_list = pipeline.rerank(RerankRequest(**body))
        event = served_list.event()
        served.write({f"{event.timestamp:%Y-%m-%d}": [event.model_dump_json()]}, sync=True)
        landing.append(impressions(event))
        return response.model_dump(mode="json")

    def interact(events):
        sink.accept(InteractionBatch(events=events).events)

    frame = simulate_traffic(world, n, rerank, interact, MODEL, np.random.default_rng(4))
    served.close()
    landing.log.close()
    return frame


def test_a_worse_canary_is_rolled_back_by_the_canary_analysis(site, world):
    from flows.lifecycle import canary_analysis_flow
    from models.registry import Registry

    settings, _ = site
    champion = _aliases(settings)["champion"]
    bad = _register_shuffled(settings)
    traffic = _canary_traffic(settings, world, 2_000)
    by_variant = traffic.groupby("variant")["model_version"].agg(set).to_dict()
    assert by_variant.get("canary") == {bad} and by_variant.get("champion") == {champion}
    os.environ["RERANKER_CANARY_MIN_LISTS"] = "300"
    try:
        result = canary_analysis_flow(model_id=MODEL, data_dir=str(settings.data_dir))
    finally:
        del os.environ["RERANKER_CANARY_MIN_LISTS"]
    assert result["decision"] == "rollback", result["reason"]
    assert result["difference"]["high"] < 0
    assert _aliases(settings) == {"champion": champion}  # champion unchanged, canary alias gone
    tags = Registry(settings.tracking_uri()).client.get_model_version(MODEL, bad).tags
    assert tags["canary.decision"] == "rollback" and "significantly worse" in tags["rolled_back_reason"]


def test_a_failed_training_leaves_the_champion_serving_and_says_why(site):
    from flows.lifecycle import train_and_register_flow

    settings, _ = site
    before = _aliases(settings)
    table = next(settings.layout.feature_tables.rglob("*.parquet"))
    saved = table.read_bytes()
    table.write_bytes(b"not parquet")  # a corrupt offline feature table
    try:
        state = train_and_register_flow(model_id=MODEL, rounds=30, data_dir=str(settings.data_dir),
                                        gates=GATES, return_state=True)  # fmt: skip
    finally:
        table.write_bytes(saved)
    assert state.is_failed() and "parquet" in state.message.lower()
    assert _aliases(settings) == before


def test_retrain_flow_runs_the_chain_on_the_new_data(site):
    from flows.lifecycle import retrain_flow

    settings, _ = site
    before = _aliases(settings)
    result = retrain_flow(model_id=MODEL, rounds=30, data_dir=str(settings.data_dir), gates=GATES)
    assert result["features"]["materialize"]["mode"] == "incremental"
    training = result["training"]
    assert training["version"] not in before.values()
    after = _aliases(settings)
    assert after["champion"] == before["champion"]  # a retrain never moves the champion
    assert after.get("canary") == (training["version"] if training["passed_gates"] else None)
    assert json.dumps(result)  # the flow's result is plain data


def test_a_failing_flow_run_from_the_cli_exits_1_with_the_reason(site, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from reranker.cli import app

    settings, _ = site
    for key in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_PERSIST_BY_DEFAULT"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))  # the CLI sets them; undone after the test
    monkeypatch.setenv("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    result = CliRunner().invoke(
        app, ["flows", "run", "drift", "--model-id", "nope", "--data-dir", str(settings.data_dir)]
    )
    assert result.exit_code == 1
    assert "flow drift ended Failed" in result.output and "has no champion" in result.output


def test_a_canary_decision_is_not_applied_when_the_aliases_moved_meanwhile(site):
    from models.canary import CanaryReport, VariantStats, apply_decision
    from models.evaluation import Interval
    from models.registry import AliasError, Registry

    settings, _ = site
    before = _aliases(settings)
    rate = Interval(0.2, 0.19, 0.21)
    stale = CanaryReport(MODEL, VariantStats("999", 600, 50, 6000, 1200, rate), VariantStats("998", 600, 50, 6000,
                         1300, rate), Interval(0.02, 0.01, 0.03), "promote", "test", ("-", "-"))  # fmt: skip
    with pytest.raises(AliasError, match="aliases moved"):
        apply_decision(Registry(settings.tracking_uri()), stale)
    assert _aliases(settings) == before
