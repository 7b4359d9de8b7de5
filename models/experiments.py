"""Studies with a known answer: position-bias correction on the synthetic world, and off-policy estimation on the
Open Bandit Dataset (BTS's click rate estimated from the random policy's log, against BTS's own log)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.lambdarank import TrainConfig, train_lambdarank
from models.metrics import per_list
from models.ope import estimate
from models.ranker import feature_matrix
from reranker.synthetic import SyntheticWorld, WorldConfig, simulate_clicks

BIAS_FEATURES = ["first_stage_score", "affinity_obs", "quality_obs", "query_match"]


def _observed(world: SyntheticWorld, req: dict[str, np.ndarray], docs: np.ndarray, rng: np.random.Generator,
              scores: np.ndarray) -> pd.DataFrame:  # fmt: skip
    """What a ranker can observe of (request, document): no true relevance, only noisy views of its parts."""
    users, queries = req["users"][:, None], req["queries"][:, None]
    cat = world.doc_category[docs]
    n, m = docs.shape
    return pd.DataFrame(
        {
            "list_id": np.repeat(np.arange(n), m),
            "first_stage_score": scores.ravel(),
            "affinity_obs": (world.user_pref[users, cat] + rng.normal(0, 0.05, docs.shape)).ravel(),
            "quality_obs": (world.doc_quality[docs] + rng.normal(0, 0.5, docs.shape)).ravel(),
            "query_match": (cat == world.query_category(queries)).astype(float).ravel(),
            "grade": world.relevance(users, docs, queries).ravel().astype(float),
        }
    )


def logged_click_lists(world: SyntheticWorld, n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Logged lists of n requests (shown documents, their position and position-biased clicks), and the requests."""
    req = world.sample_requests(rng, n)
    clicks, _ = simulate_clicks(world, req, rng)
    shown_docs = np.take_along_axis(req["candidates"], req["shown"], axis=1)
    frame = _observed(world, req, shown_docs, rng, np.take_along_axis(req["scores"], req["shown"], axis=1))
    frame["click"] = clicks.ravel().astype(float)
    frame["position"] = np.tile(np.arange(shown_docs.shape[1]), n)
    return frame, req


@dataclass
class BiasResult:
    seed: int
    ndcg_logging: float
    ndcg_naive: float
    ndcg_position_aware: float
    ndcg_oracle: float

    @property
    def recovered(self) -> float:
        gap = self.ndcg_oracle - self.ndcg_naive
        return (self.ndcg_position_aware - self.ndcg_naive) / gap if gap > 0 else float("nan")


def position_bias(seed: int = 7, n_train: int = 20_000, n_test: int = 3_000, rounds: int = 300,
                  eta: float = 1.0, threads: int = 1) -> BiasResult:  # fmt: skip
    """Train on position-biased clicks of the logged lists (naive, and position-aware) and on the true grades of
    the same lists (oracle); NDCG@10 of each against the true relevance of all candidates of fresh requests."""
    world = SyntheticWorld.create(WorldConfig(seed=seed, eta=eta))
    rng = np.random.default_rng(seed + 100)
    train, _ = logged_click_lists(world, n_train, rng)
    test_req = world.sample_requests(rng, n_test)
    test = _observed(world, test_req, test_req["candidates"], rng, test_req["scores"])
    logging_score = np.zeros(test_req["scores"].shape)
    np.put_along_axis(
        logging_score, test_req["shown"], -np.arange(test_req["shown"].shape[1])[None, :] + 100, 1
    )

    def ndcg(scores: np.ndarray) -> float:
        return float(per_list(test, scores, (10,), label="grade")["ndcg@10"].mean())

    base = TrainConfig(num_boost_round=rounds, threads=threads, seed=seed,
                       params={"min_data_in_leaf": 50, "lambdarank_truncation_level": 10})  # fmt: skip
    X = feature_matrix(train, BIAS_FEATURES)
    naive, _ = train_lambdarank(train, X, BIAS_FEATURES, TrainConfig(**{**asdict(base), "position_aware": False}),
                                label="click")  # fmt: skip
    aware, info = train_lambdarank(train, X, BIAS_FEATURES, base, label="click")
    assert info["position_aware"]
    oracle, _ = train_lambdarank(train, X, BIAS_FEATURES, TrainConfig(**{**asdict(base), "position_aware": False}),
                                 label="grade")  # fmt: skip
    test_X = feature_matrix(test, BIAS_FEATURES)
    return BiasResult(seed, ndcg(logging_score.ravel()), ndcg(naive.score_matrix(test_X)),
                      ndcg(aware.score_matrix(test_X)), ndcg(oracle.score_matrix(test_X)))  # fmt: skip


# ---------------------------------------------------------------- Open Bandit Dataset


def _cross_fitted_q(
    log: pd.DataFrame, folds: int = 2, prior: float = 20.0, seed: int = 7
) -> tuple[np.ndarray, pd.DataFrame]:
    """Smoothed click rate per (item, position), each row predicted from the other folds; and the full table."""
    fold = np.random.default_rng(seed).integers(0, folds, len(log))
    q_logged = np.empty(len(log))
    base = log["click"].mean()
    for f in range(folds):
        fit = log[fold != f]
        stats = fit.groupby(["item_id", "position"])["click"].agg(["sum", "count"])
        rate = (stats["sum"] + prior * base) / (stats["count"] + prior)
        keys = pd.MultiIndex.from_frame(log.loc[fold == f, ["item_id", "position"]])
        q_logged[fold == f] = rate.reindex(keys).fillna(base).to_numpy()
    stats = log.groupby(["item_id", "position"])["click"].agg(["sum", "count"])
    table = ((stats["sum"] + prior * base) / (stats["count"] + prior)).rename("q").reset_index()
    return q_logged, table


def obd_ope(cache: Path, campaigns: tuple[str, ...] = ("all", "men", "women"), n_boot: int = 500,
            seed: int = 7) -> list[dict[str, Any]]:  # fmt: skip
    from reranker.datasets import obd_logs, on_policy_ctr

    rows = []
    for campaign in campaigns:
        random_log = obd_logs(cache, "random", campaign)
        bts_log = obd_logs(cache, "bts", campaign)
        truth, truth_hw = on_policy_ctr(bts_log)
        rand_ctr, rand_hw = on_policy_ctr(random_log)
        # BTS's action distribution per position: its logged propensities, averaged per (item, position)
        pi_e = bts_log.groupby(["position", "item_id"])["propensity_score"].mean()
        pi_e = pi_e / pi_e.groupby(level="position").transform("sum")
        keys = pd.MultiIndex.from_frame(random_log[["position", "item_id"]])
        target = pi_e.reindex(keys).fillna(0.0).to_numpy()
        q_logged, q_table = _cross_fitted_q(random_log, seed=seed)
        expected = (pi_e.rename("pi").reset_index().merge(q_table, on=["item_id", "position"], how="left")
                    .fillna({"q": random_log["click"].mean()}))  # fmt: skip
        expected = (expected["pi"] * expected["q"]).groupby(expected["position"]).sum()
        q_target = random_log["position"].map(expected).to_numpy()
        est = estimate(random_log["click"].to_numpy(), target, random_log["propensity_score"].to_numpy(),
                       q_logged, q_target, n_boot=n_boot, seed=seed)  # fmt: skip
        row: dict[str, Any] = {"campaign": campaign, "rounds": len(random_log),
                               "ctr_random": rand_ctr, "ctr_random_hw": rand_hw,
                               "ctr_bts": truth, "ctr_bts_hw": truth_hw}  # fmt: skip
        for name in ("ips", "snips", "dr"):
            iv = getattr(est, name)
            row[name] = iv.mean
            row[f"{name}_low"], row[f"{name}_high"] = iv.low, iv.high
            row[f"{name}_rel_error"] = abs(iv.mean - truth) / truth
        rows.append(row)
    return rows
