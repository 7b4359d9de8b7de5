"""Logs of the epsilon-greedy policy carry propensities that let IPS recover another policy's click rate."""

import numpy as np

from models.ope import estimate
from reranker.exploration import epsilon_greedy_slots
from reranker.synthetic import CLICK_PROB, SyntheticWorld, WorldConfig


def test_ips_from_epsilon_greedy_logs_recovers_a_known_policys_click_rate():
    world = SyntheticWorld.create(WorldConfig(seed=5, n_users=500, n_docs=300))
    rng = np.random.default_rng(0)
    req = world.sample_requests(rng, 20_000)
    # The target policy puts at slot 0 the candidate with the best noisy quality+affinity score.
    users, cands = req["users"][:, None], req["candidates"]
    target_score = world.latent(users, cands, req["queries"][:, None]) + rng.normal(0, 1.0, cands.shape)
    target_pick = target_score.argmax(axis=1)
    # Truth: expected click rate at slot 0 of the target policy (examination at slot 0 is 1).
    grades = world.relevance(users, cands, req["queries"][:, None])
    truth = CLICK_PROB[grades[np.arange(len(cands)), target_pick]].mean()
    # Logs: the epsilon-greedy logging policy over the first-stage scores, slot 0 only.
    shown, prop = epsilon_greedy_slots(req["scores"], 1, 0.3, rng)
    logged = shown[:, 0]
    clicks = (rng.random(len(logged)) < CLICK_PROB[grades[np.arange(len(cands)), logged]]).astype(float)
    target_prob = (logged == target_pick).astype(float)
    res = estimate(clicks, target_prob, prop[:, 0], n_boot=300)
    assert res.ips.low <= truth <= res.ips.high, (truth, res.ips)
    assert res.snips.low <= truth <= res.snips.high
    logging_rate = clicks.mean()
    assert abs(truth - logging_rate) > 0.05  # the two policies really differ


def test_one_request_fast_path_makes_the_same_choices_as_the_batch_policy():
    from reranker.exploration import _one_row, _rows

    rng = np.random.default_rng(0)
    for trial in range(300):
        m = int(rng.integers(1, 60))
        k = int(rng.integers(1, m + 1))
        eps = float(rng.choice([0.0, 0.1, 0.5, 1.0]))
        scores = rng.integers(0, 5, m).astype(float)  # ties: the first index wins in both
        scores[rng.random(m) < 0.2] = -np.inf  # candidates without a first-stage score, under that fallback
        fast = _one_row(scores, k, eps, np.random.default_rng(trial))
        batch = _rows(scores[None, :], k, eps, np.random.default_rng(trial))
        np.testing.assert_array_equal(fast[0], batch[0])
        np.testing.assert_allclose(fast[1], batch[1])
        # the compiled draws advance the caller's generator as numpy's own draws do
        drawn, drawn_batch = np.random.default_rng(trial), np.random.default_rng(trial)
        _one_row(scores, k, eps, drawn)
        _rows(scores[None, :], k, eps, drawn_batch)
        assert drawn.random() == drawn_batch.random()
