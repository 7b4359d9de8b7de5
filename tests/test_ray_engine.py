"""The Ray engine against the local one on the same lake of 100,000 synthetic events: Feast's Ray offline store
answers the point-in-time joins as DuckDB does (same rows, same values), and Ray Train's LightGBM (two workers,
whole lists per worker) fits a model within noise of the local fit. A real local Ray cluster, capped at 2 CPUs.
(Marked `scale`: `make bench-scale` runs it, `make ci` does not.)"""

import shutil

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.scale]


EVENTS = 100_000


@pytest.fixture(scope="module")
def lake(world, tmp_path_factory):
    """The shop's lake of `EVENTS` events, its feature tables applied to a local Feast store."""
    from expectations.ingest import ingest
    from reranker.lake import atomic_write_parquet, read_interactions, upsert_documents
    from reranker.settings import Layout
    from reranker.synthetic import documents_frame, event_chunks
    from tests.conftest import build_features

    layout = Layout(tmp_path_factory.mktemp("lake100k") / "data")
    layout.raw.mkdir(parents=True)
    events = pd.concat(list(event_chunks(world, EVENTS, chunk_requests=2_000)), ignore_index=True)
    atomic_write_parquet(events, layout.raw / "events.parquet")
    assert ingest(layout.raw / "events.parquet", layout, salt="s", hash_ids=False).added == len(events)
    upsert_documents(layout.documents, documents_frame(world))
    events = read_interactions(layout.interactions)
    return layout, events, build_features(layout, events)


@pytest.fixture(scope="module")
def ray_store(lake, tmp_path_factory):
    from feature_repo.store import open_store, write_config
    from reranker.engine import RayCluster, stop

    layout, _, _ = lake
    repo = tmp_path_factory.mktemp("feast_ray")
    shutil.copy(layout.feast / "registry.db", repo / "registry.db")
    cluster = RayCluster(num_cpus=2, object_store_mb=512, workers=2, storage=repo / "train")
    write_config(repo, ray=cluster)
    assert "type: ray" in (repo / "feature_store.yaml").read_text()
    yield open_store(repo), cluster
    stop()


def test_ray_and_local_engines_build_the_same_training_set_and_models_within_noise(lake, ray_store):
    from feature_repo.manifest import FeatureManifest
    from feature_repo.text import TextIndex
    from models.evaluation import evaluate_scores
    from models.lambdarank import TrainConfig, train_lambdarank, train_lambdarank_subsets
    from models.lists import RetrievalProtocol, relevant_lists
    from models.training import build_lists
    from models.training_set import build_training_set

    layout, events, store = lake
    rstore, cluster = ray_store
    manifest, text = FeatureManifest.read(layout.feature_tables), TextIndex.load(layout.feature_tables)
    lists, _ = build_lists(events, RetrievalProtocol())
    lists = relevant_lists(lists)
    assert lists["list_id"].nunique() > 3_000
    local = build_training_set(store, lists, manifest, text)
    ray = build_training_set(rstore, lists, manifest, text)
    assert local.digest() == ray.digest() and local.features == ray.features
    np.testing.assert_array_equal(local.X, ray.X)  # NaN where both miss

    ids = local.list_ids()
    train, test = local.subset(ids[: len(ids) * 2 // 3]), local.subset(ids[len(ids) * 2 // 3 :])
    config = TrainConfig(num_boost_round=60, threads=1, seed=3)
    alone, info = train_lambdarank(train.frame, train.X, train.features, config)
    # on Ray as rolling-origin folds fit: the train lists' rows picked from the whole set's X, not a copy of them
    keys, rows = local.fit_rows(np.arange(len(ids) * 2 // 3))
    spread, rinfo = train_lambdarank(keys, local.X, local.features,
                                     TrainConfig(**{**config.__dict__, "ray": cluster}), rows=rows)  # fmt: skip
    assert (info["engine"], rinfo["engine"]) == ("local", "ray") and spread.booster.num_trees() == 60
    assert rinfo["position_aware"] == info["position_aware"]
    report = evaluate_scores(test.frame, {"local": alone.score_matrix(test.X), "ray": spread.score_matrix(test.X)},
                             "local", (10,), n_boot=500, seed=1)  # fmt: skip
    diff = report.differences["local - ray"]["ndcg@10"]
    assert diff.low <= 0 <= diff.high, diff

    # an ablation in one run of the workers (as the family selection fits): each model is the one a run of its own
    # on those columns gives (LightGBM's network kept up from the first fit to the last)
    ray_config = TrainConfig(**{**config.__dict__, "num_boost_round": 20, "ray": cluster})
    at = np.flatnonzero([i.family != "engagement" for i in local.inputs])
    (whole, _), (part, _) = train_lambdarank_subsets(keys, local.X, local.features, [None, at], ray_config,
                                                     rows=rows)  # fmt: skip
    alone_part, _ = train_lambdarank(
        keys, local.X[:, at], [local.features[i] for i in at], ray_config, rows=rows
    )
    alone_whole, _ = train_lambdarank(keys, local.X, local.features, ray_config, rows=rows)
    assert trees(part) == trees(alone_part)
    assert trees(whole) == trees(alone_whole)
    assert trees(part) != trees(whole)


def trees(model):
    """A model's trees as LightGBM writes them (not its parameters: the network's ports differ run to run)."""
    text = model.booster.model_to_string()
    return text[: text.index("end of trees")]
