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


def list_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Each row's list, numbered 0.. in order of appearance (rows of a list are contiguous)."""
    return pd.factorize(frame["list_id"], sort=False)[0].astype(np.int64)


def shard_rows(list_no: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The rows worker `rank` of `world` trains on: whole lists, every `world`-th one."""
    return np.flatnonzero(list_no % world == rank)


def _fit_on_worker(config: dict[str, Any]) -> None:
    """The loop each Ray Train worker runs: its lists from the dataset, then one `lgb.train` among the workers for
    each subset of the inputs, one after another, on the rows read once."""
    import ray.train
    from ray.train.lightgbm import get_network_params

    context = ray.train.get_context()
    rank = context.get_world_rank()
    shard = ray.train.get_dataset_shard(f"shard{rank}")
    X, label, position, sizes = shard_arrays(list(shard.iter_batches(batch_size=None, batch_format="pyarrow")),
                                             len(config["features"]))  # fmt: skip
    params = {
        **config["params"],
        **get_network_params(),
        "tree_learner": "data",
        "pre_partition": True,
        "num_threads": 1,
    }
    with tempfile.TemporaryDirectory() as directory:
        first = None
        for k, at in enumerate(config["subsets"]):
            names = config["features"] if at is None else [config["features"][i] for i in at]
            # LightGBM's bins replace the rows (a subset's copy of them, or the views) once lgb.train has built
            # them, there, with the network up, so that the workers agree on the bins
            data = lgb.Dataset(X if at is None else [m[:, at] for m in X], label=label, group=sizes,
                               position=position if config["use_position"] else None, feature_name=names,
                               free_raw_data=True)  # fmt: skip
            if k == len(config["subsets"]) - 1:
                del X  # the last fit: the Dataset holds the only reference to the rows
            booster = lgb.train(params, data, num_boost_round=config["rounds"])
            if rank == 0:
                booster.save_model(str(Path(directory) / model_file(k)))
            # The first fit set up LightGBM's network (its listening port cannot be bound again at once): it stays
            # up, with that booster, for the next fits, which are given the machines' number only.
            if first is None:
                first = booster
                params = {p: v for p, v in params.items() if p not in ("machines", "local_listen_port")}
            del data, booster
        # One report at the end (every worker takes part: it is a barrier); Ray's LightGBM callback reports after
        # every round, ≈ 2 s each here, which was most of a fit's time.
        checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
        ray.train.report({"models": len(config["subsets"])}, checkpoint=checkpoint)


def model_file(k: int) -> str:
    """The checkpoint's file of the k-th subset's model."""
    return f"model-{k}.txt"


def shard_arrays(
    blocks: list[Any], width: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """A worker's rows (its shard's Arrow blocks, as they arrive), lists contiguous and rows in list order: the
    inputs as float32 matrices, the labels, the positions and the list sizes. The driver writes each shard in list
    order as one block, and then the matrices are views of the blocks in Ray's object store (LightGBM reads a list
    of them without a copy: at 10M events ≈ 0.7 GB a worker); blocks that arrive out of order (Ray Data need not
    keep it) are written once into one matrix in list order."""
    list_no = np.concatenate([b["list_no"].to_numpy() for b in blocks])
    order = np.lexsort((np.concatenate([b["row"].to_numpy() for b in blocks]), list_no))
    views = [b["X"].combine_chunks().flatten().to_numpy().reshape(b.num_rows, width) for b in blocks]
    label = np.concatenate([b["label"].to_numpy() for b in blocks])[order]
    position = np.concatenate([b["position"].to_numpy() for b in blocks])[order].astype(np.int32)
    sizes = np.diff(list_starts_of(pd.Series(list_no[order])))
    if np.array_equal(order, np.arange(len(order))):
        return views, label, position, sizes
    to = np.empty_like(order)
    to[order] = np.arange(len(order))  # where each arriving row goes
    X, at = np.empty((len(order), width), dtype=np.float32), 0
    for view in views:
        X[to[at : at + len(view)]] = view
        at += len(view)
    return [X], label, position, sizes


def train_on_ray(frame: pd.DataFrame, X: np.ndarray, features: list[str], label: str, params: dict[str, Any],
                 rounds: int, use_position: bool, cluster: RayCluster, rows: np.ndarray | None = None,
                 subsets: list[np.ndarray | None] | None = None) -> list[lgb.Booster]:  # fmt: skip
    """The boosters LightGBM's data-parallel learner fits on `cluster.workers` Ray Train workers, one for each of
    `subsets` (columns of `X`, in order; None: all of them; default one model on all), in one run of the workers;
    `rows`: the rows of `X` that `frame`'s rows are (default all, in order)."""
    subsets = subsets if subsets is not None else [None]
    cluster.start()  # before Ray is imported here (see reranker.engine.prepare_ray_process)
    import ray.data
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    list_no = list_numbers(frame)
    labels = frame[label].to_numpy(dtype=np.float64)
    positions = frame["position"].to_numpy(dtype=np.int64) if use_position else np.zeros(len(frame), np.int64)
    shards: dict[str, Any] = {}
    for rank in range(cluster.workers):  # each worker is handed its own lists only (not every row to filter)
        mine = shard_rows(list_no, rank, cluster.workers)
        # the table is a temporary: once in the object store, its copy here (half of X) is not kept during the fit
        shards[f"shard{rank}"] = ray.data.from_arrow(shard_table({
            "list_no": list_no[mine], "row": mine, "label": labels[mine], "position": positions[mine],
            "X": X[mine if rows is None else rows[mine]]}))  # fmt: skip
    storage = cluster.storage or Path(tempfile.mkdtemp(prefix="reranker-ray-"))
    storage.mkdir(parents=True, exist_ok=True)
    trainer = LightGBMTrainer(
        _fit_on_worker,
        train_loop_config={
            "params": params,
            "rounds": rounds,
            "features": features,
            "use_position": use_position,
            "subsets": [None if at is None else [int(i) for i in at] for at in subsets],
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
        return [lgb.Booster(model_file=str(Path(directory) / model_file(k))) for k in range(len(subsets))]


def shard_table(columns: dict[str, np.ndarray]) -> Any:
    """A shard's columns as one Arrow table (X's rows as fixed-size lists)."""
    import pyarrow as pa

    X = columns["X"]
    return pa.table({
        **{k: v for k, v in columns.items() if k != "X"},
        "X": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1]),
    })  # fmt: skip
