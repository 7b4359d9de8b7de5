"""Off-policy estimators of a target policy's click rate from logs that carry propensities.

Each logged row is (context, action shown, reward, logging propensity pi_b(a|x)). With the target policy's
probability pi_e(a|x) of the same action, importance weights are w = pi_e / pi_b.
- IPS: mean(w * r)
- SNIPS: sum(w * r) / sum(w)
- DR: mean(sum_a pi_e(a|x) q(x, a) + w * (r - q(x, a_logged))), with q a reward model fitted on other folds.
Intervals come from the bootstrap over logged rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.evaluation import Interval


@dataclass
class OPEResult:
    ips: Interval
    snips: Interval
    dr: Interval | None = None


def ips(reward: np.ndarray, weight: np.ndarray) -> float:
    return float(np.mean(weight * reward))


def snips(reward: np.ndarray, weight: np.ndarray) -> float:
    total = float(np.sum(weight))
    return float(np.sum(weight * reward) / total) if total > 0 else float("nan")


def dr(reward: np.ndarray, weight: np.ndarray, q_logged: np.ndarray, q_target: np.ndarray) -> float:
    """q_logged: reward model at the logged action; q_target: its expectation under the target policy."""
    return float(np.mean(q_target + weight * (reward - q_logged)))


def estimate(
    reward: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    q_logged: np.ndarray | None = None,
    q_target: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 7,
) -> OPEResult:
    reward = np.asarray(reward, dtype=float)
    if np.any(np.asarray(logging_prob) <= 0):
        raise ValueError("logging propensities must be > 0")
    weight = np.asarray(target_prob, dtype=float) / np.asarray(logging_prob, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(reward), size=(n_boot, len(reward)))

    def interval(fn, *cols: np.ndarray) -> Interval:  # type: ignore[no-untyped-def]
        boots = np.array([fn(*(c[i] for c in cols)) for i in idx])
        low, high = np.nanquantile(boots, [0.025, 0.975])
        return Interval(fn(*cols), float(low), float(high))

    result = OPEResult(ips=interval(ips, reward, weight), snips=interval(snips, reward, weight))
    if q_logged is not None and q_target is not None:
        result.dr = interval(dr, reward, weight, np.asarray(q_logged, float), np.asarray(q_target, float))
    return result
