import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from models.evaluation import cluster_bootstrap, evaluate_scores
from models.metrics import list_metrics, per_list
from tests.conftest import random_lists


@pytest.mark.parametrize("k", [5, 10, 20])
def test_ndcg_matches_sklearn_with_exponential_gains(k):
    df = random_lists(200, 30, seed=k)
    ours = per_list(df, df["score"].to_numpy(), (k,))[f"ndcg@{k}"]
    theirs = []
    for _, g in df.groupby("list_id", sort=False):
        if (g["label"] > 0).any():
            gains = (2.0 ** g["label"].to_numpy() - 1)[None, :]
            theirs.append(ndcg_score(gains, g["score"].to_numpy()[None, :], k=k))
    np.testing.assert_allclose(ours.to_numpy(), np.array(theirs), rtol=1e-10)


def test_binary_ndcg_equals_linear_gain_ndcg():
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 40).astype(float), rng.normal(size=40)
    assert list_metrics(y, s, (10,))["ndcg@10"] == pytest.approx(ndcg_score(y[None], s[None], k=10))


def test_map_at_full_length_matches_sklearn_average_precision():
    df = random_lists(100, 25, seed=3)
    df["label"] = (df["label"] > 1).astype(float)
    ours = per_list(df, df["score"].to_numpy(), (25,))["map@25"]
    theirs = [average_precision_score(g["label"], g["score"]) for _, g in df.groupby("list_id", sort=False)
              if g["label"].any()]  # fmt: skip
    np.testing.assert_allclose(ours.to_numpy(), theirs, rtol=1e-10)


def test_mrr_and_recall_by_hand():
    y = np.array([0, 0, 1, 0, 1, 1.0])
    s = np.array([6, 5, 4, 3, 2, 1.0])  # ranked as given
    m = list_metrics(y, s, (2, 3, 5))
    assert m["mrr@2"] == 0.0 and m["mrr@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 3) and m["recall@5"] == pytest.approx(2 / 3)


def test_per_list_equals_list_metrics_on_each_list():
    """The vectorised metrics against the one-list definition: interleaved rows, graded labels, tied and missing
    scores, lists shorter than k and lists without a relevant item."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 30, 400)
    ids = np.repeat(rng.permutation(400).astype(str), sizes)
    order = rng.permutation(len(ids))
    df = pd.DataFrame({"list_id": ids[order], "label": rng.choice([0, 0, 0, 1, 2, 3.0], len(ids))})
    scores = rng.integers(0, 4, len(ids)).astype(float)
    scores[rng.random(len(ids)) < 0.05] = np.nan
    ks = (1, 5, 10, 20)
    expected = {}
    for list_id, idx in df.groupby("list_id", sort=False).indices.items():
        y = df["label"].to_numpy()[idx]
        if (y > 0).any():
            expected[list_id] = list_metrics(y, scores[idx], ks)
    pd.testing.assert_frame_equal(per_list(df, scores, ks), pd.DataFrame.from_dict(expected, orient="index"),
                                  rtol=1e-12)  # fmt: skip


def test_no_list_with_a_relevant_item_gives_an_empty_frame():
    empty = pd.DataFrame({"list_id": pd.Series([], dtype=str), "label": pd.Series([], dtype=float)})
    assert per_list(empty, np.array([]), (10,)).empty
    none = pd.DataFrame({"list_id": ["a", "a", "b"], "label": [0, 0, 0.0]})
    assert per_list(none, np.array([1.0, 2.0, 3.0]), (10,)).shape == (0, 0)


def test_lists_without_relevant_items_are_left_out():
    df = pd.DataFrame({"list_id": ["a"] * 3 + ["b"] * 3, "label": [0, 0, 0, 1, 0, 0.0]})
    out = per_list(df, np.arange(6, dtype=float), (3,))
    assert list(out.index) == ["b"]


def test_paired_difference_interval_excludes_zero_only_for_a_real_gain():
    df = random_lists(300, 20, seed=5)
    df["user_id"] = (df["list_id"].astype(int) // 3).astype(str)
    good = df["label"].to_numpy() + np.random.default_rng(0).normal(0, 1.0, len(df))
    rep = evaluate_scores(df, {"good": good, "noise": df["score"].to_numpy(),
                               "noise2": np.random.default_rng(9).normal(size=len(df))}, "good", (10,), 500)  # fmt: skip
    assert rep.differences["good - noise"]["ndcg@10"].low > 0
    noise = evaluate_scores(df, {"a": df["score"].to_numpy(), "b": np.random.default_rng(9).normal(size=len(df))},
                            "a", (10,), 500)  # fmt: skip
    iv = noise.differences["a - b"]["ndcg@10"]
    assert iv.low < 0 < iv.high


def test_cluster_bootstrap_is_wider_when_lists_share_a_user():
    rng = np.random.default_rng(0)
    user_effect = np.repeat(rng.normal(0, 1, 50), 10)  # ten correlated lists per user
    values = pd.DataFrame({"m": user_effect + rng.normal(0, 0.1, 500)})
    by_user = cluster_bootstrap(values, np.repeat(np.arange(50), 10), 1000, 0)["m"]
    by_list = cluster_bootstrap(values, np.arange(500), 1000, 0)["m"]
    assert (by_user.high - by_user.low) > 2 * (by_list.high - by_list.low)


@pytest.mark.parametrize(("n_clusters", "n_boot"), [(51, 1000), (777, 130), (8, 63)])
def test_cluster_bootstrap_draws_the_resamples_of_the_plain_percentile_bootstrap(n_clusters, n_boot):
    """Chunked and weighted, the intervals are those of drawing every resample at once and averaging its values."""
    rng = np.random.default_rng(n_clusters)
    clusters = rng.integers(0, n_clusters, 600)
    values = pd.DataFrame({"a": rng.normal(size=600), "b": rng.random(600)})
    codes, _ = pd.factorize(clusters)
    draws = np.random.default_rng(5).integers(0, codes.max() + 1, size=(n_boot, codes.max() + 1))
    got = cluster_bootstrap(values, clusters, n_boot, 5)
    for col in values.columns:
        sums = np.bincount(codes, weights=values[col].to_numpy())
        counts = np.bincount(codes).astype(float)
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        assert got[col].low == pytest.approx(low, rel=1e-12)
        assert got[col].high == pytest.approx(high, rel=1e-12)
        assert got[col].mean == pytest.approx(values[col].mean(), rel=1e-12)
