"""The compiled trees score as LightGBM's own predict, or step aside for models they do not reproduce."""

import lightgbm as lgb
import numpy as np
import pytest

from models.compiled_trees import CompiledTrees
from models.lambdarank import LambdaRankRanker
from tests.conftest import tree_rows


@pytest.mark.parametrize("zero_as_missing", [False, True])
@pytest.mark.parametrize("missing", [False, True])
def test_compiled_predictions_equal_lightgbm(missing, zero_as_missing):
    rng = np.random.default_rng(int(missing) * 2 + int(zero_as_missing))
    X = tree_rows(rng, 3000, missing)
    y = (np.nan_to_num(X[:, 0]) > 0.3).astype(float) + (np.nan_to_num(X[:, 5]) > 1) * (
        np.nan_to_num(X[:, 1]) > 0
    )
    params = {"objective": "lambdarank", "num_leaves": 31, "max_depth": 6, "min_data_in_leaf": 5, "verbose": -1,
              "zero_as_missing": zero_as_missing}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y, group=[30] * 100), 60)
    compiled = CompiledTrees.from_booster(booster)
    assert compiled is not None
    rows = np.ascontiguousarray(tree_rows(rng, 500, True), dtype=np.float32)
    rows[:20] = 0.0
    rows[120:140] = np.where(rng.random((20, 6)) < 0.5, np.inf, -np.inf)
    # values exactly at the thresholds (float32's own, as LightGBM learns them) go the way LightGBM sends them
    for i, (f, cut) in enumerate(zip(compiled.feature, compiled.threshold, strict=True)):
        rows[20 + i % 100, f] = cut
    np.testing.assert_allclose(
        compiled.predict(rows), booster.predict(rows, num_threads=1), rtol=1e-12, atol=1e-12
    )
    ranker = LambdaRankRanker(booster)
    assert ranker.compiled_trees is None  # offline: LightGBM scores until serving warms the ranker up
    ranker.warm_up()
    assert ranker.compiled_trees is not None
    np.testing.assert_allclose(ranker.score_matrix(rows), booster.predict(rows), rtol=1e-12, atol=1e-12)


def test_models_it_does_not_reproduce_are_scored_by_lightgbm():
    rng = np.random.default_rng(7)
    X = tree_rows(rng, 2000, False)
    y = (X[:, 5] == 2) * 1.0 + X[:, 0] + rng.normal(0, 0.1, len(X))
    # a categorical split, and a transformed output (sigmoid of the trees' sum)
    categorical = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                            lgb.Dataset(X, y, categorical_feature=[5]), 10)  # fmt: skip
    binary = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(X, y > 0.5), 10)
    for booster in (categorical, binary):
        assert CompiledTrees.from_booster(booster) is None
        ranker = LambdaRankRanker(booster)
        ranker.warm_up()
        np.testing.assert_allclose(ranker.score_matrix(X[:50]), booster.predict(X[:50].astype(np.float32)))
