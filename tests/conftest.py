from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

for key, value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "FEAST_USAGE": "False",
    "OMP_WAIT_POLICY": "PASSIVE",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture
def layout(tmp_path: Path):
    from reranker.settings import Layout

    return Layout(tmp_path / "data")


@pytest.fixture(scope="session")
def world():
    """A small synthetic shop: catalog attributes, text queries, request features (in_stock) and context (device)."""
    from reranker.synthetic import SyntheticWorld, WorldConfig

    return SyntheticWorld.create(WorldConfig.shop(seed=11, n_users=300, n_docs=200, days=30, n_candidates=30))


SHOP_FEATURES = Path(__file__).resolve().parent.parent / "feature_repo" / "featuresets" / "synthetic.yaml"


def shop_feature_set():
    """The shipped declaration of the synthetic shop."""
    from reranker.featureset import load_feature_set

    return load_feature_set(SHOP_FEATURES)


def build_features(layout, events, feature_set=None):
    """Tables of the feature set (default the shop's) from the lake's events and catalog, applied to Feast."""
    from feature_repo import store as fs

    fs.build_tables(
        events, pd.read_parquet(layout.documents), layout.feature_tables, feature_set or shop_feature_set()
    )
    return fs.apply(layout.feast, layout.feature_tables)


@pytest.fixture(scope="session")
def synthetic_events(world) -> pd.DataFrame:
    from reranker.synthetic import event_chunks

    return pd.concat(list(event_chunks(world, 30_000, chunk_requests=1_000)), ignore_index=True)


def random_lists(n_lists: int, size: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "list_id": np.repeat(np.arange(n_lists), size).astype(str),
            "label": rng.integers(0, 3, n_lists * size).astype(float),
            "score": rng.normal(size=n_lists * size),
        }
    )


def tree_rows(rng: np.random.Generator, n: int, missing: bool) -> np.ndarray:
    """Rows for small LightGBM models of the tree tests: six features, the last with few distinct values (the same
    feature split again down a path), optionally with NaN and exact zeros."""
    X = rng.normal(size=(n, 6))
    X[:, 5] = rng.integers(0, 4, n)
    if missing:
        X[rng.random(X.shape) < 0.15] = np.nan
        X[rng.random(X.shape) < 0.1] = 0.0
    return X


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check, seconds: float, what: str, proc=None, every: float = 2.0):
    """Poll `check` until it returns something truthy (exceptions count as not yet); fail when `proc` (a Popen)
    exits first or after `seconds`."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        time.sleep(every)
    raise TimeoutError(f"{what} within {seconds} s")


def first_json(text: str) -> object:
    """The first JSON value in a command's output (libraries may log after it)."""
    import json

    return json.JSONDecoder().raw_decode(text[text.index("{") :])[0]


def assert_reads_equal_feasts(features, store, events, direct_sqlite: bool | None = None) -> int:
    """Serving's in-memory documents and per-request users equal what Feast's get_online_features returns, encoded
    as training encodes it; returns how many of the users checked are known."""
    from feature_repo.inputs import encode_documents, user_vector

    state = features.state()
    manifest = state.manifest
    specs = manifest.view_specs()
    docs = [*list(dict.fromkeys(events["document_id"]))[:40], "never-seen-doc"]
    refs = [f"{v}:{c}" for v, s in specs.items() if s.entity == "document" for c in s.columns]
    theirs = store.get_online_features(features=refs, entity_rows=[{"document_id": d} for d in docs],
                                       full_feature_names=True).to_df()  # fmt: skip
    ours = state.documents.matrix[state.documents.rows(docs)]
    np.testing.assert_array_equal(ours, encode_documents(theirs, manifest))
    assert np.isfinite(ours[:-1]).any() and np.isnan(ours[-1]).all()
    user_refs = [f"{v}:{c}" for v, s in specs.items() if s.entity == "user" for c in s.columns]
    known = 0
    for user in [*events["user_id"].value_counts().index[:25], "never-seen-user"]:
        got = store.get_online_features(features=user_refs, entity_rows=[{"user_id": user}],
                                        full_feature_names=True).to_dict()  # fmt: skip
        mine = features.user(user)
        if all(v[0] is None for k, v in got.items() if k != "user_id"):
            assert mine is None, user
            continue
        known += 1
        np.testing.assert_array_equal(mine.values, user_vector({k: v[0] for k, v in got.items()}, manifest))
        assert list(mine.recent) == list(got.get("user_history__recent_positives", [None])[0] or [])
        assert mine.segment == got["user_segment__segment"][0]
    return known


@pytest.fixture(scope="session")
def lake(tmp_path_factory, world, synthetic_events):
    from expectations.ingest import ingest
    from reranker.lake import read_interactions, upsert_documents
    from reranker.settings import Layout
    from reranker.synthetic import documents_frame

    layout = Layout(tmp_path_factory.mktemp("lake") / "data")
    layout.raw.mkdir(parents=True)
    synthetic_events.to_parquet(layout.raw / "events.parquet")
    assert ingest(layout.raw / "events.parquet", layout, salt="s", hash_ids=False).added == len(
        synthetic_events
    )
    upsert_documents(layout.documents, documents_frame(world))
    events = read_interactions(layout.interactions)
    store = build_features(layout, events)
    return layout, events, store


@pytest.fixture(scope="session")
def stage(lake):
    from feature_repo.store import materialize
    from models.gates import GatePolicy
    from models.registry import Registry
    from models.training import TrainPlan, train_and_register
    from serving.model_cache import ModelCache
    from serving.online_features import OnlineFeatures
    from serving.pipeline import RerankPipeline

    layout, events, store = lake
    materialize(store, layout.feature_tables)
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    registry = Registry(layout.mlflow_uri, create=True)
    plan = TrainPlan(model_id="serving", n_boot=100, folds=2, select_families=False,
                     gates=GatePolicy(min_lists=50, baselines=("rule_based",)))  # fmt: skip
    plan.train.num_boost_round = 30
    files = {"segments.pkl": layout.feature_tables / "segments.pkl"}
    outcome = train_and_register(events, store, registry, plan, layout.feature_tables, files,
                                 layout.mlflow / "artifacts", catalog=pd.read_parquet(layout.documents))  # fmt: skip
    assert outcome.alias == "champion", outcome.gates
    features = OnlineFeatures(store, layout.feature_tables)
    cache = ModelCache(lambda: registry, lambda: features.manifest, canary_share=0.2, poll_seconds=3600)
    pipeline = RerankPipeline(features, cache, hash_user=lambda u: u, budget_ms=60_000)
    return pipeline, registry, events, store, outcome


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    """A Prefect test harness (a temporary API and database) per module, with results in a temp dir. (Held for the
    whole session, its teardown hung at the end of a full run.)"""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = {PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect") / "storage",
               PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}  # fmt: skip
    with temporary_settings(storage), prefect_test_harness(server_startup_timeout=120):
        yield
