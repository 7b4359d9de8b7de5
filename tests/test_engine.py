"""The engine setting: what RERANKER_ENGINE=ray renders for Feast and how the lists are sharded for Ray Train."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_repo.rows import RowBlock
from feature_repo.store import write_config
from models.distributed import list_numbers, shard_rows
from reranker.engine import RUNTIME_ENV, RayCluster
from reranker.settings import Settings


def test_local_is_the_default_and_ray_is_capped(tmp_path: Path, monkeypatch):
    assert Settings(data_dir=tmp_path).ray_cluster() is None
    monkeypatch.setenv("RERANKER_ENGINE", "ray")
    monkeypatch.setenv("RERANKER_RAY_NUM_CPUS", "2")
    cluster = Settings(data_dir=tmp_path).ray_cluster()
    assert cluster is not None and cluster.address is None and cluster.num_cpus == 2 and cluster.workers == 2
    monkeypatch.setenv("RERANKER_ENGINE", "spark")
    with pytest.raises(ValueError, match="engine"):
        Settings(data_dir=tmp_path)


def test_feature_store_yaml_on_ray_uses_the_ray_offline_store_and_engine(tmp_path: Path):
    local = yaml.safe_load(write_config(tmp_path / "a").read_text())
    assert local["offline_store"] == {"type": "duckdb"} and "batch_engine" not in local
    config = yaml.safe_load(
        write_config(tmp_path / "b", ray=RayCluster(num_cpus=2, object_store_mb=512)).read_text()
    )
    assert config["offline_store"]["type"] == "ray" and config["batch_engine"]["type"] == "ray.engine"
    for part in (config["offline_store"], config["batch_engine"]):
        assert part["ray_conf"] == {
            "num_cpus": 2,
            "object_store_memory": 512 * 2**20,
            "include_dashboard": False,
            "runtime_env": RUNTIME_ENV,
        }
    assert config["batch_engine"]["max_workers"] == 2  # no more tasks at once than the cluster has CPUs
    assert config["batch_engine"]["write_concurrency"] == 1  # SQLite online store: one writer
    joined = yaml.safe_load(write_config(tmp_path / "c", redis="r:6379", ray=RayCluster(address="ray://h:10001"))
                            .read_text())  # fmt: skip
    assert joined["offline_store"]["ray_address"] == "ray://h:10001"
    assert joined["offline_store"]["ray_conf"] == {
        "runtime_env": RUNTIME_ENV
    }  # the fix and optimized workers
    assert joined["batch_engine"]["write_concurrency"] == 8


def test_each_worker_gets_whole_lists_and_every_row_once():
    frame = pd.DataFrame({"list_id": np.repeat(["b", "a", "c", "d", "e"], [3, 1, 4, 2, 5])})
    numbers = list_numbers(frame)
    assert numbers.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4]
    shards = [shard_rows(numbers, rank, 2) for rank in range(2)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(frame)))
    for rows in shards:
        for lid in frame["list_id"].iloc[rows].unique():  # a list is whole where it is
            assert set(np.flatnonzero(frame["list_id"] == lid)) <= set(rows.tolist())


def test_row_blocks_are_assembled_in_place_as_one_block():
    rng = np.random.default_rng(0)

    def block(sizes):
        n = sum(sizes)
        return RowBlock(rng.random((n, 3)), rng.random((len(sizes), 2)), rng.random((n, 1)), rng.random(n),
                        np.r_[0, np.cumsum(sizes)].astype(np.int64), rng.random(len(sizes)))  # fmt: skip

    a, b = block([2, 3]), block([4])
    starts = np.array([0, 2, 5, 9], np.int64)
    both = RowBlock.assemble(starts, iter([a, b]))
    assert both.list_starts.tolist() == [0, 2, 5, 9] and both.n_rows == 9
    for name in ("docs", "users", "extras", "first_stage", "now_days"):
        np.testing.assert_array_equal(
            getattr(both, name), np.concatenate([getattr(a, name), getattr(b, name)])
        )
    np.testing.assert_array_equal(both.take_lists(np.array([2])).docs, b.docs)
    np.testing.assert_array_equal(both.take_lists(np.array([0, 1])).users, a.users)
    lean = both.structure().take_lists(np.array([2, 0]))  # the lists stay; the values are gone for good
    assert lean.list_starts.tolist() == [0, 4, 6] and lean.docs.nbytes == 0 and lean.dropped
    np.testing.assert_array_equal(lean.first_stage, np.r_[b.first_stage, a.first_stage[:2]])
    with pytest.raises(ValueError, match="dropped"):
        lean.compute(None)
    with pytest.raises(ValueError, match="in order"):
        RowBlock.assemble(starts, iter([b, a]))
    with pytest.raises(ValueError, match="not 9"):
        RowBlock.assemble(starts, iter([a]))


def test_the_vectorized_point_in_time_join_answers_as_feasts_row_loop():
    """feature_repo.ray_join replaces Feast's row-by-row fallback: same answers, on keyed rows, missing keys,
    times before any feature row, list-valued features and ties at the same time."""
    from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayDataProcessor

    from feature_repo.ray_join import point_in_time_join

    t = pd.Timestamp("2026-01-01", tz="UTC")
    features = pd.DataFrame({
        "doc": ["a", "a", "b", "b", "c"],
        "event_timestamp": [t, t + pd.Timedelta(days=2), t, t + pd.Timedelta(days=1), t + pd.Timedelta(days=5)],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0],
        "tags": [["x"], ["x", "y"], ["z"], ["w"], ["v"]],
    })  # fmt: skip
    batch = pd.DataFrame({
        "document_id": ["a", "a", "b", "c", "zz", "b"],
        "event_timestamp": [t + pd.Timedelta(days=1), t + pd.Timedelta(days=3), t + pd.Timedelta(days=1),
                            t + pd.Timedelta(days=1), t, t - pd.Timedelta(days=1)],
        "_ask": range(6),
    }, index=[10, 11, 12, 13, 14, 15])  # fmt: skip
    args = (batch, features, ["document_id"], ["doc"], "event_timestamp", ["price", "tags"])
    theirs = RayDataProcessor._manual_point_in_time_join(None, *args)
    mine = point_in_time_join(None, *args)
    assert list(mine.index) == list(theirs.index) and list(mine.columns) == list(theirs.columns)
    assert mine["price"].tolist()[:3] == theirs["price"].tolist()[:3] == [1.0, 2.0, 4.0]
    assert mine["price"].iloc[3:].isna().all() and theirs["price"].iloc[3:].isna().all()
    assert [list(v) for v in mine["tags"]] == [list(v) for v in theirs["tags"]]


def test_the_worker_hook_patches_feast_when_it_is_imported_and_not_before():
    """Ray runs `install` in every worker; it must not import Feast itself (seconds per worker) and must patch it
    once a task imports it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from feature_repo.ray_join import FEAST_RAY, install, point_in_time_join\n"
        "install()\n"
        "assert 'feast' not in sys.modules\n"
        "from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayDataProcessor\n"
        "assert RayDataProcessor._manual_point_in_time_join is point_in_time_join\n"
    )
    run = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
