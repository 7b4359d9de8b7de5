"""The learned ranker: LightGBM LambdaRank through `lgb.train`, position-bias aware when positions are logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.compiled_trees import CompiledTrees
from models.ranker import feature_matrix
from models.tree_shap import LeafTables, TooDeep
from reranker.engine import RayCluster

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 20,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


@dataclass
class LambdaRankRanker:
    booster: lgb.Booster
    name: str = "learned"
    threads: int = 1
    _names: list[str] = field(init=False, repr=False)
    _compiled: CompiledTrees | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # read once: LightGBM builds the names through ctypes on every call
        self._names = list(self.booster.feature_name())

    @property
    def feature_names(self) -> list[str]:
        return self._names

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.score_matrix(feature_matrix(features, self.feature_names))

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """Scores of a matrix whose columns are `feature_names`, in order (rows cast to float32, as LightGBM
        scores them): the compiled trees when they reproduce the model, else LightGBM."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self._compiled is not None:
            return self._compiled.predict(X)
        return np.asarray(self.booster.predict(X, num_threads=self.threads), dtype=np.float64)

    @property
    def compiled_trees(self) -> CompiledTrees | None:
        """The compiled trees `warm_up` built, when they reproduce the model."""
        return self._compiled

    def warm_up(self) -> None:
        """For serving: compile the trees for scoring (checked against LightGBM) and build the SHAP tables, and
        compile their kernels now (seconds the first time in a process without numba's on-disk cache), so that no
        request pays for them. Offline scoring of many rows at once is not warmed up: it stays with LightGBM."""
        self._compiled = CompiledTrees.from_booster(self.booster)
        row = np.zeros((1, len(self.feature_names)), dtype=np.float32)
        self.score_matrix(row)
        self.contributions(row)

    @cached_property
    def leaf_tables(self) -> LeafTables | None:
        """The per-leaf SHAP tables (built once, ~0.3 s for 150 trees); None for models too deep for them."""
        try:
            return LeafTables.from_booster(self.booster)
        except TooDeep:
            return None

    def contributions(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """Exact SHAP values per row, (rows x (features + 1)) with the expected value last, as LightGBM's
        pred_contrib (which serves models too deep for the tables)."""
        tables = self.leaf_tables
        if tables is None:
            return np.atleast_2d(np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=threads)))
        return tables.contributions(X)

    def importance(self) -> pd.Series:
        gain = self.booster.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.feature_names).sort_values(ascending=False)


@dataclass
class TrainConfig:
    num_boost_round: int = 400
    threads: int = 1
    seed: int = 7
    position_aware: bool = True
    position_bias_regularization: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    ray: RayCluster | None = None  # set: fitted by Ray Train on this cluster (models.distributed)


def _dataset(
    frame: pd.DataFrame, X: np.ndarray, features: list[str], label: str, use_position: bool, ref: Any = None
) -> lgb.Dataset:
    sizes = frame.groupby("list_id", sort=False).size().to_numpy()
    position = frame["position"].to_numpy(dtype=np.int32) if use_position else None
    return lgb.Dataset(
        np.ascontiguousarray(X, dtype=np.float32),
        label=frame[label].to_numpy(dtype=np.float64),
        group=sizes,
        position=position,
        feature_name=features,
        reference=ref,
        free_raw_data=True,
    )


def train_lambdarank(
    train: pd.DataFrame,
    X: np.ndarray,
    features: list[str],
    config: TrainConfig,
    label: str = "label",
    rows: np.ndarray | None = None,
) -> tuple[LambdaRankRanker, dict[str, Any]]:
    """`train`: the lists (rows of a list contiguous) with labels and, when logged, positions; `X` their inputs, in
    `features` order, or with `rows` the rows of `X` that `train`'s rows are (a subset of a larger set: on Ray the
    workers' shards are taken from `X` by them, without a copy of the subset beside it). Positions (0-based) are used
    when the frame has them for every row and `position_aware` is set: LightGBM then learns position bias factors
    jointly."""
    ((ranker, info),) = train_lambdarank_subsets(train, X, features, [None], config, label, rows)
    return ranker, info


def train_lambdarank_subsets(
    train: pd.DataFrame,
    X: np.ndarray,
    features: list[str],
    subsets: list[np.ndarray | None],
    config: TrainConfig,
    label: str = "label",
    rows: np.ndarray | None = None,
) -> list[tuple[LambdaRankRanker, dict[str, Any]]]:
    """One model (as `train_lambdarank`'s) for each subset of `X`'s columns (positions in `features`; None: all),
    on the same lists: an ablation, e.g. each input family left out in turn. On Ray one run of the workers fits
    them one after another from the shards they read once (a run of its own each costs the workers' start and the
    hand-off of the rows again)."""
    use_position = bool(config.position_aware and "position" in train and train["position"].notna().all())
    params = {**DEFAULT_PARAMS, **config.params, "num_threads": config.threads, "seed": config.seed}
    if use_position:
        params["lambdarank_position_bias_regularization"] = config.position_bias_regularization
    if config.ray is not None:
        from models.distributed import train_on_ray

        boosters = train_on_ray(train, X, features, label, params, config.num_boost_round, use_position, config.ray,
                                rows, subsets)  # fmt: skip
    else:
        rows_X = X if rows is None else X[rows]
        boosters = [
            lgb.train(params, _dataset(train, rows_X if at is None else rows_X[:, at],
                                       features if at is None else [features[i] for i in at], label, use_position),
                      num_boost_round=config.num_boost_round)
            for at in subsets
        ]  # fmt: skip
    info = {
        "engine": "ray" if config.ray is not None else "local",
        "position_aware": use_position,
        "params": params,
    }
    return [
        (LambdaRankRanker(b, threads=config.threads), {**info, "num_trees": b.num_trees()}) for b in boosters
    ]
