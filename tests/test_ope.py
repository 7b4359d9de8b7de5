import numpy as np
import pytest

from models.ope import dr, estimate, ips, snips


def _bandit(n=40_000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    ctr = np.linspace(0.02, 0.2, k)
    logging = np.full(k, 1 / k)
    actions = rng.integers(0, k, n)
    rewards = (rng.random(n) < ctr[actions]).astype(float)
    target = np.array([0.05, 0.05, 0.1, 0.2, 0.6])  # prefers the best arms
    return actions, rewards, logging[actions], target, ctr


def test_ips_and_snips_recover_a_known_policy_value():
    actions, rewards, logged, target, ctr = _bandit()
    truth = float(target @ ctr)
    res = estimate(rewards, target[actions], logged, n_boot=300)
    assert res.ips.low <= truth <= res.ips.high
    assert res.snips.low <= truth <= res.snips.high
    assert abs(res.ips.mean - truth) / truth < 0.1


def test_dr_is_unbiased_even_with_a_wrong_reward_model():
    actions, rewards, logged, target, ctr = _bandit(seed=1)
    truth = float(target @ ctr)
    wrong_q = np.full(len(ctr), 0.5)  # far off
    q_logged = wrong_q[actions]
    q_target = np.full(len(actions), target @ wrong_q)
    w = target[actions] / logged
    assert abs(dr(rewards, w, q_logged, q_target) - truth) / truth < 0.1


def test_estimators_by_hand():
    r, w = np.array([1.0, 0.0, 1.0]), np.array([2.0, 1.0, 0.5])
    assert ips(r, w) == pytest.approx(2.5 / 3)
    assert snips(r, w) == pytest.approx(2.5 / 3.5)


def test_zero_logging_propensity_is_rejected():
    with pytest.raises(ValueError, match="propensities"):
        estimate(np.ones(3), np.ones(3), np.array([0.5, 0.0, 0.5]))
