import numpy as np
import pandas as pd

from models.experiments import BIAS_FEATURES
from models.lambdarank import TrainConfig, train_lambdarank
from models.metrics import per_list
from models.ranker import FirstStageRanker, Ranker, feature_matrix
from models.rule_based import RuleBasedRanker


def test_fallback_and_learned_share_the_interface():
    assert isinstance(RuleBasedRanker(), Ranker) and isinstance(FirstStageRanker(), Ranker)


def test_rule_based_scores_rows_with_missing_features():
    rule = RuleBasedRanker.for_inputs(["engagement.positives", "engagement.positives_7d", "engagement.positives_30d",
                                       "metadata.created_at_age_days", "affinity.brand", "affinity.categories",
                                       "affinity.categories_max", "first_stage.rank"])  # fmt: skip
    assert rule.feature_names == ["engagement.positives", "engagement.positives_7d", "metadata.created_at_age_days",
                                  "affinity.brand", "affinity.categories_max"]  # fmt: skip
    frame = pd.DataFrame({"engagement.positives": [10.0, np.nan, 10.0, 10.0],
                          "metadata.created_at_age_days": [10.0, 10.0, 2000.0, 10.0],
                          "affinity.brand": [0.5, 0.5, 0.5, 0.1]})  # fmt: skip
    scores = rule.score(frame)
    assert np.isfinite(scores).all()
    assert scores[0] > scores[1]  # more popular
    assert scores[0] > scores[2]  # fresher
    assert scores[0] > scores[3]  # a better affinity match


def test_first_stage_fallback_keeps_candidates_without_a_score_in_order_with_finite_scores():
    scores = FirstStageRanker().score_matrix(np.array([[np.nan], [2.0], [np.nan], [5.0]]))
    assert np.isfinite(scores).all()
    assert list(np.argsort(-scores, kind="stable")) == [3, 1, 0, 2]


def _lists(world, n, seed):
    from models.experiments import logged_click_lists

    return logged_click_lists(world, n, np.random.default_rng(seed))[0]


def test_lambdarank_learns_true_relevance_and_uses_positions(world):
    train, test = _lists(world, 3_000, 1), _lists(world, 500, 2)
    X = feature_matrix(train, BIAS_FEATURES)
    model, info = train_lambdarank(train, X, BIAS_FEATURES, TrainConfig(num_boost_round=60), label="grade")
    random_scores = np.random.default_rng(0).normal(size=len(test))
    learned = per_list(test, model.score(test), (10,), "grade")["ndcg@10"].mean()
    assert learned > per_list(test, random_scores, (10,), "grade")["ndcg@10"].mean() + 0.1
    _, info = train_lambdarank(train, X, BIAS_FEATURES, TrainConfig(num_boost_round=5), label="click")
    assert info["position_aware"] is True
    _, info = train_lambdarank(train.drop(columns="position"), X, BIAS_FEATURES, TrainConfig(num_boost_round=5),
                               label="click")  # fmt: skip
    assert info["position_aware"] is False


def test_fitting_rows_of_a_larger_matrix_is_fitting_a_copy_of_them(world):
    """Rolling-origin folds fit `rows` of the whole set's X (no copy on Ray): the same model as the rows copied."""
    from feature_repo.rows import list_starts_of

    lists = _lists(world, 600, 4)
    X = feature_matrix(lists, BIAS_FEATURES)
    starts = list_starts_of(lists["list_id"])
    rows = np.arange(starts[100], starts[450])  # whole lists from the middle
    config = TrainConfig(num_boost_round=10)
    copied, _ = train_lambdarank(lists.iloc[rows].reset_index(drop=True), X[rows], BIAS_FEATURES, config,
                                 label="click")  # fmt: skip
    picked, _ = train_lambdarank(lists.iloc[rows].reset_index(drop=True), X, BIAS_FEATURES, config, label="click",
                                 rows=rows)  # fmt: skip
    assert picked.booster.model_to_string() == copied.booster.model_to_string()
    whole, _ = train_lambdarank(lists, X, BIAS_FEATURES, config, label="click")
    assert whole.booster.model_to_string() != copied.booster.model_to_string()


def test_an_ablation_fits_each_subset_of_the_columns_as_a_fit_on_those_columns_alone(world):
    from models.lambdarank import train_lambdarank_subsets

    lists = _lists(world, 400, 4)
    X = feature_matrix(lists, BIAS_FEATURES)
    config = TrainConfig(num_boost_round=10)
    at = np.array([2, 0])  # a subset, in another order
    (whole, _), (part, info) = train_lambdarank_subsets(
        lists, X, BIAS_FEATURES, [None, at], config, label="click"
    )
    alone, _ = train_lambdarank(lists, X[:, at], [BIAS_FEATURES[i] for i in at], config, label="click")
    assert part.feature_names == [BIAS_FEATURES[2], BIAS_FEATURES[0]] and info["num_trees"] == 10
    assert part.booster.model_to_string() == alone.booster.model_to_string()
    everything, _ = train_lambdarank(lists, X, BIAS_FEATURES, config, label="click")
    assert whole.booster.model_to_string() == everything.booster.model_to_string()


def test_learned_model_scores_frames_missing_some_features(world):
    train = _lists(world, 500, 3)
    model, _ = train_lambdarank(train, feature_matrix(train, BIAS_FEATURES), BIAS_FEATURES,
                                TrainConfig(num_boost_round=10), label="grade")  # fmt: skip
    scores = model.score(train.drop(columns=["quality_obs"]))
    assert np.isfinite(scores).all()


def test_a_ray_workers_shard_is_read_in_list_order_without_a_copy_when_it_arrives_in_order():
    """The worker's rows are views of the shard's blocks when they arrive in list order (as the driver writes them),
    and one matrix in list order when Ray Data hands them over in another order: the same rows either way."""
    from models.distributed import shard_arrays, shard_table

    rng = np.random.default_rng(5)
    sizes = np.array([3, 1, 4, 2])
    list_no = np.repeat(np.arange(4) * 2, sizes)  # every other list: this worker's
    n = len(list_no)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    table = shard_table({"list_no": list_no, "row": np.arange(n) * 10, "label": np.arange(n, dtype=float),
                         "position": np.arange(n), "X": X})  # fmt: skip
    views, label, position, got_sizes = shard_arrays([table], 3)
    assert len(views) == 1 and not views[0].flags.owndata  # a view of the block
    np.testing.assert_array_equal(views[0], X)
    np.testing.assert_array_equal(got_sizes, sizes)
    np.testing.assert_array_equal(label, np.arange(n))
    shuffled = [table.slice(6, 4), table.slice(0, 3), table.slice(3, 3)]  # out of order
    (matrix,), label, position, got_sizes = shard_arrays(shuffled, 3)
    np.testing.assert_array_equal(matrix, X)
    np.testing.assert_array_equal(label, np.arange(n))
    np.testing.assert_array_equal(position, np.arange(n))
    np.testing.assert_array_equal(got_sizes, sizes)
