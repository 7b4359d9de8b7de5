"""The per-leaf SHAP tables give LightGBM's own pred_contrib, row for row."""

import lightgbm as lgb
import numpy as np
import pytest

from models.lambdarank import LambdaRankRanker
from models.tree_shap import LeafTables
from tests.conftest import tree_rows


@pytest.mark.parametrize("zero_as_missing", [False, True])
@pytest.mark.parametrize("missing", [False, True])
def test_tables_equal_pred_contrib(missing, zero_as_missing):
    rng = np.random.default_rng(int(missing) * 2 + int(zero_as_missing))
    X = tree_rows(rng, 3000, missing)
    y = (
        np.nan_to_num(X[:, 0])
        + np.nan_to_num(X[:, 1]) * (np.nan_to_num(X[:, 5]) > 1)
        + rng.normal(0, 0.1, len(X))
    )
    params = {"objective": "regression", "num_leaves": 31, "max_depth": 6, "min_data_in_leaf": 5, "verbose": -1,
              "zero_as_missing": zero_as_missing}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y), 40)
    tables = LeafTables.from_booster(booster)
    rows = tree_rows(rng, 300, True)
    rows[:20] = 0.0
    rows[20:40] = np.where(
        rng.random((20, 6)) < 0.5, np.inf, -np.inf
    )  # infinite inputs, as LightGBM reads them
    np.testing.assert_allclose(
        tables.contributions(rows), booster.predict(rows, pred_contrib=True), atol=1e-12
    )


def test_lambdarank_ranker_explains_float32_rows_through_the_tables():
    rng = np.random.default_rng(5)
    X = tree_rows(rng, 2000, True)
    y = (np.nan_to_num(X[:, 0]) > 0.5).astype(float) + (np.nan_to_num(X[:, 2]) > 1)
    params = {
        "objective": "lambdarank",
        "num_leaves": 15,
        "max_depth": 5,
        "min_data_in_leaf": 400,
        "verbose": -1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y, group=[20] * 100), 30)
    rows = np.ascontiguousarray(tree_rows(rng, 10, True), dtype=np.float32)
    ranker = LambdaRankRanker(booster)
    assert ranker.leaf_tables is not None
    np.testing.assert_allclose(
        ranker.contributions(rows), booster.predict(rows, pred_contrib=True), atol=1e-12
    )


def test_paths_too_long_for_tables_fall_back_to_lightgbm():
    rng = np.random.default_rng(6)
    X = tree_rows(rng, 4000, False)
    y = np.sin(X[:, 0] * 3) + X[:, 1] * X[:, 2] + rng.normal(0, 0.05, len(X))
    params = {
        "objective": "regression",
        "num_leaves": 255,
        "max_depth": -1,
        "min_data_in_leaf": 2,
        "verbose": -1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y), 5)
    ranker = LambdaRankRanker(booster)
    assert ranker.leaf_tables is None
    rows = X[:7]
    np.testing.assert_allclose(ranker.contributions(rows), booster.predict(rows, pred_contrib=True))


def test_categorical_splits_fall_back_to_lightgbm():
    rng = np.random.default_rng(7)
    X = tree_rows(rng, 2000, False)
    y = (X[:, 5] == 2) * 1.0 + X[:, 0] + rng.normal(0, 0.1, len(X))
    params = {"objective": "regression", "num_leaves": 7, "min_data_in_leaf": 20, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[5]), 10)
    ranker = LambdaRankRanker(booster)
    assert ranker.leaf_tables is None
    np.testing.assert_allclose(ranker.contributions(X[:5]), booster.predict(X[:5], pred_contrib=True))


def test_one_leaf_trees():
    """Trees without a split (nothing worth splitting) give every feature 0 and the expected value."""
    rng = np.random.default_rng(8)
    X = tree_rows(rng, 500, True)
    params = {"objective": "regression", "min_data_in_leaf": 1000, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, rng.normal(size=len(X))), 5)
    tables = LeafTables.from_booster(booster)
    np.testing.assert_allclose(
        tables.contributions(X[:20]), booster.predict(X[:20], pred_contrib=True), atol=1e-12
    )
