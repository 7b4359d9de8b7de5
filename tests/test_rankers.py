import numpy as np
import pandas as pd

from models.experiments import BIAS_FEATURES
from models.lambdarank import TrainConfig, train_lambdarank
from models.metrics import per_list
from models.ranker import FirstStageRanker, Ranker
from models.rule_based import RuleBasedRanker


def test_fallback_and_learned_share_the_interface():
    assert isinstance(RuleBasedRanker(), Ranker) and isinstance(FirstStageRanker(), Ranker)


def test_rule_based_scores_rows_with_missing_features():
    frame = pd.DataFrame({"doc_n_positive": [10.0, np.nan, 10.0], "doc_age_days": [10.0, 10.0, 2000.0]})
    scores = RuleBasedRanker().score(frame)
    assert np.isfinite(scores).all()
    assert scores[0] > scores[1]  # more popular
    assert scores[0] > scores[2]  # fresher


def _lists(world, n, seed):
    from models.experiments import logged_click_lists

    return logged_click_lists(world, n, np.random.default_rng(seed))[0]


def test_lambdarank_learns_true_relevance_and_uses_positions(world):
    train, test = _lists(world, 3_000, 1), _lists(world, 500, 2)
    model, info = train_lambdarank(train, BIAS_FEATURES, TrainConfig(num_boost_round=60), label="grade")
    random_scores = np.random.default_rng(0).normal(size=len(test))
    learned = per_list(test, model.score(test), (10,), "grade")["ndcg@10"].mean()
    assert learned > per_list(test, random_scores, (10,), "grade")["ndcg@10"].mean() + 0.1
    _, info = train_lambdarank(train, BIAS_FEATURES, TrainConfig(num_boost_round=5), label="click")
    assert info["position_aware"] is True
    _, info = train_lambdarank(train.drop(columns="position"), BIAS_FEATURES, TrainConfig(num_boost_round=5),
                               label="click")  # fmt: skip
    assert info["position_aware"] is False


def test_learned_model_scores_frames_missing_some_features(world):
    train = _lists(world, 500, 3)
    model, _ = train_lambdarank(train, BIAS_FEATURES, TrainConfig(num_boost_round=10), label="grade")
    scores = model.score(train.drop(columns=["quality_obs"]))
    assert np.isfinite(scores).all()
