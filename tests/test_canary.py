"""Canary analysis on served-list logs of two known synthetic policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.canary import PROMOTE, ROLLBACK, WAIT, CanaryPolicy, analyze
from reranker.exploration import epsilon_greedy_slots
from reranker.synthetic import CLICK_PROB, SyntheticWorld, WorldConfig

EPS, K = 0.2, 5


def _serve(world, rng, n, version, variant, score_fn, start):
    """Served-list items and clicks of an epsilon-greedy policy over score_fn, as the stage logs them."""
    req = world.sample_requests(rng, n)
    scores = score_fn(req)
    shown, prop = epsilon_greedy_slots(scores, K, EPS, rng)
    docs = np.take_along_axis(req["candidates"], shown, axis=1)
    grades = world.relevance(req["users"][:, None], docs, req["queries"][:, None])
    examined = rng.random(docs.shape) < world.examination(np.arange(K))[None, :]
    clicked = examined & (rng.random(docs.shape) < CLICK_PROB[grades])
    rid = np.repeat([f"{variant}-{i}" for i in range(n)], K)
    served = pd.DataFrame({
        "request_id": rid, "user_id": np.repeat(req["users"].astype(str), K), "model_id": "m",
        "model_version": version, "variant": variant, "served_by": "learned",
        "timestamp": start + pd.to_timedelta(np.repeat(np.arange(n), K), unit="s"),
        "exploration_rate": EPS, "n_candidates": scores.shape[1], "document_id": docs.ravel().astype(str),
        "position": np.tile(np.arange(K), n), "score": 0.0, "propensity": prop.ravel(),
    })  # fmt: skip
    events = served[clicked.ravel()][["request_id", "document_id"]].assign(interaction_type="click")
    return served, events


def _policies(world, rng):
    good = lambda r: world.latent(r["users"][:, None], r["candidates"], r["queries"][:, None])  # noqa: E731
    bad = lambda r: rng.normal(size=r["candidates"].shape)  # noqa: E731
    return good, bad


def _logs(world, n_champ, n_canary, champion_fn, canary_fn, seed=0):
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-11-01", tz="UTC")
    a, ea = _serve(world, rng, n_champ, "1", "champion", champion_fn, t0)
    b, eb = _serve(world, rng, n_canary, "2", "canary", canary_fn, t0)
    return pd.concat([a, b], ignore_index=True), pd.concat([ea, eb], ignore_index=True)


@pytest.fixture(scope="module")
def small_world():
    return SyntheticWorld.create(WorldConfig(seed=3, n_users=400, n_docs=300))


def test_a_better_canary_is_promoted_and_a_worse_one_rolled_back(small_world):
    rng = np.random.default_rng(1)
    good, bad = _policies(small_world, rng)
    served, events = _logs(small_world, 3000, 1500, bad, good)
    report = analyze(served, events, "m", "1", "2", CanaryPolicy(min_lists=500, n_boot=300))
    assert report.decision == PROMOTE, report.reason
    assert report.difference.low > 0
    served, events = _logs(small_world, 3000, 1500, good, bad)
    report = analyze(served, events, "m", "1", "2", CanaryPolicy(min_lists=500, n_boot=300))
    assert report.decision == ROLLBACK and report.difference.high < 0
    assert "significantly worse" in report.reason


def test_too_little_traffic_waits_and_same_policy_never_promotes(small_world):
    rng = np.random.default_rng(2)
    good, _ = _policies(small_world, rng)
    served, events = _logs(small_world, 3000, 100, good, good)
    assert analyze(served, events, "m", "1", "2", CanaryPolicy(min_lists=500, n_boot=200)).decision == WAIT
    served, events = _logs(small_world, 2000, 2000, good, good, seed=5)
    report = analyze(served, events, "m", "1", "2", CanaryPolicy(min_lists=500, max_lists=1000, n_boot=200))
    assert report.decision == ROLLBACK and "no gain shown" in report.reason


def test_greedy_policy_estimate_recovers_the_click_rate_without_exploration(small_world):
    rng = np.random.default_rng(3)
    good, _ = _policies(small_world, rng)
    served, events = _logs(small_world, 200, 20000, good, good, seed=9)
    report = analyze(served, events, "m", "1", "2", CanaryPolicy(n_boot=300))
    # Truth: the same policy with exploration off, simulated directly.
    req = small_world.sample_requests(rng, 20000)
    order = np.argsort(-good(req), axis=1)[:, :K]
    docs = np.take_along_axis(req["candidates"], order, axis=1)
    grades = small_world.relevance(req["users"][:, None], docs, req["queries"][:, None])
    truth = float((CLICK_PROB[grades] * small_world.examination(np.arange(K))[None, :]).mean())
    snips = report.canary.greedy_snips
    assert snips is not None and snips.low <= truth <= snips.high, (truth, snips)
    assert (
        truth > report.canary.click_rate.high
    )  # exploration costs clicks: the estimate is not the on-policy rate


def test_the_decision_reads_the_interval_at_the_policy_confidence(small_world):
    rng = np.random.default_rng(4)
    good, bad = _policies(small_world, rng)
    served, events = _logs(small_world, 1500, 600, bad, good, seed=11)
    at_95 = analyze(served, events, "m", "1", "2", CanaryPolicy(min_lists=500, n_boot=400))
    strict = analyze(
        served, events, "m", "1", "2", CanaryPolicy(min_lists=500, n_boot=400, confidence=0.9999)
    )
    assert at_95.difference.mean == strict.difference.mean
    assert strict.difference.low < at_95.difference.low and strict.difference.high > at_95.difference.high
    assert "(95% interval)" in at_95.reason and "(99.99% interval)" in strict.reason


@pytest.mark.parametrize(
    "bad",
    [{"confidence": 0.5}, {"confidence": 1.0}, {"min_lists": 0}, {"min_lists": 600, "max_lists": 500},
     {"max_loss": -0.01}, {"n_boot": 10}],
)  # fmt: skip
def test_a_policy_that_cannot_decide_soundly_is_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        CanaryPolicy(**bad)
