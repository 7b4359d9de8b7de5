"""LambdaRank on a Ray cluster: Ray Train's LightGBM trainer runs our own `lgb.train` on each worker (LightGBM's
data-parallel learner across them), so `group` and `position` are kept (Dask's ranker has no `position`). Each
worker keeps the lists whose number falls to it (list number modulo workers): no list is split across machines."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from feature_repo.rows import list_starts_of
from reranker.engine import RayCluster

MODEL_FILE = "model.txt"


def list_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Each row's list, numbered 0.. in order of appearance (rows of a list are contiguous)."""
    return pd.factorize(frame["list_id"], sort=False)[0].astype(np.int64)


def shard_rows(list_no: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The rows worker `rank` of `world` trains on: whole lists, every `world`-th one."""
    return np.flatnonzero(list_no % world == rank)


def _fit_on_worker(config: dict[str, Any]) -> None:
    """The loop each Ray Train worker runs: its lists from the dataset, one `lgb.train` among the workers."""
    import ray.train
    from ray.train.lightgbm import get_network_params

    context = ray.train.get_context()
    rank = context.get_world_rank()
    parts = list(
        ray.train.get_dataset_shard(f"shard{rank}").iter_batches(batch_size=65_536, batch_format="numpy")
    )
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    del parts
    order = np.lexsort((rows["row"], rows["list_no"]))  # lists contiguous, rows in list order
    rows = {k: v[order] for k, v in rows.items()}
    sizes = np.diff(list_starts_of(pd.Series(rows["list_no"])))
    X = (
        np.stack(list(rows["X"])) if rows["X"].dtype == object else rows["X"]
    )  # Arrow lists arrive as arrays of rows
    data = lgb.Dataset(np.ascontiguousarray(X, dtype=np.float32), label=rows["label"], group=sizes,
                       position=rows["position"].astype(np.int32) if config["use_position"] else None,
                       feature_name=config["features"], free_raw_data=True)  # fmt: skip
    params = {**config["params"], **get_network_params(), "tree_learner": "data", "pre_partition": True,
              "num_threads": 1}  # fmt: skip
    booster = lgb.train(params, data, num_boost_round=config["rounds"])
    # One report at the end (every worker takes part: it is a barrier); Ray's LightGBM callback reports after every
    # round, ≈ 2 s each here, which was most of a fit's time.
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            booster.save_model(str(Path(directory) / MODEL_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({"trees": booster.num_trees()}, checkpoint=checkpoint)


def train_on_ray(frame: pd.DataFrame, X: np.ndarray, features: list[str], label: str, params: dict[str, Any],
                 rounds: int, use_position: bool, cluster: RayCluster) -> lgb.Booster:  # fmt: skip
    """The booster LightGBM's data-parallel learner fits on `cluster.workers` Ray Train workers."""
    cluster.start()  # before Ray is imported here (see reranker.engine.prepare_ray_process)
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    list_no = list_numbers(frame)
    labels = frame[label].to_numpy(dtype=np.float64)
    positions = frame["position"].to_numpy(dtype=np.int64) if use_position else np.zeros(len(frame), np.int64)
    shards = {}
    for rank in range(cluster.workers):  # each worker is handed its own lists only (not every row to filter)
        rows = shard_rows(list_no, rank, cluster.workers)
        shards[f"shard{rank}"] = _dataset({"list_no": list_no[rows], "row": rows, "label": labels[rows],
                                           "position": positions[rows], "X": X[rows]})  # fmt: skip
    storage = cluster.storage or Path(tempfile.mkdtemp(prefix="reranker-ray-"))
    storage.mkdir(parents=True, exist_ok=True)
    trainer = LightGBMTrainer(
        _fit_on_worker,
        train_loop_config={
            "params": params,
            "rounds": rounds,
            "features": features,
            "use_position": use_position,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cluster.workers, resources_per_worker={"CPU": cluster.cpu_per_worker()}
        ),
        run_config=ray.train.RunConfig(storage_path=str(storage.resolve()), name="lambdarank"),
        datasets=shards,
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),  # whole: each worker reads its own shard
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train ended without a model: {result.error}")
    with result.checkpoint.as_directory() as directory:
        return lgb.Booster(model_file=str(Path(directory) / MODEL_FILE))


def _dataset(columns: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa
    import ray.data

    X = columns["X"]
    table = pa.table({
        **{k: v for k, v in columns.items() if k != "X"},
        "X": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1]),
    })  # fmt: skip
    return ray.data.from_arrow(table)
