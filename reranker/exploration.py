"""The exploration policy of the stage (and of the synthetic logging policy): epsilon-greedy per slot, with the
exact probability of every choice, so that logs support off-policy evaluation and debiased retraining."""

from __future__ import annotations

import numpy as np


def epsilon_greedy_slots(
    scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fill k slots per row: the best remaining candidate w.p. 1-eps, else a uniform remaining one.

    Returns the chosen candidate indexes and, per slot, the probability the policy gave that choice given the
    slots before it (these sum to 1 over the remaining candidates at each slot).
    """
    if scores.shape[0] == 1:
        return _one_row(scores[0], k, epsilon, rng)
    return _rows(scores, k, epsilon, rng)


def _rows(
    scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n, m = scores.shape
    remaining = np.ones((n, m), dtype=bool)
    shown = np.empty((n, k), dtype=np.int64)
    prop = np.empty((n, k))
    rows = np.arange(n)
    for slot in range(k):
        masked = np.where(remaining, scores, -np.inf)
        best = masked.argmax(axis=1)
        n_left = m - slot
        explore = rng.random(n) < epsilon
        # uniform choice among remaining: rank of a uniform draw among True entries
        u = rng.integers(0, n_left, size=n)
        order = np.argsort(~remaining, axis=1, kind="stable")  # remaining candidates first
        uniform_pick = order[rows, u]
        pick = np.where(explore, uniform_pick, best)
        shown[:, slot] = pick
        prop[:, slot] = (1 - epsilon) * (pick == best) + epsilon / n_left
        remaining[rows, pick] = False
    return shown, prop


def _one_row(
    scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same policy and the same random draws for one request (the stage's case), without per-slot arrays."""
    m = len(scores)
    ranked = [int(i) for i in np.argsort(-scores, kind="stable")]  # argmax's first-index tie rule
    by_index = list(range(m))
    shown = np.empty((1, k), dtype=np.int64)
    prop = np.empty((1, k))
    for slot in range(k):
        n_left = m - slot
        best = ranked[0]
        explore = rng.random() < epsilon  # scalar draws: the same numbers as size=1, without the arrays
        uniform_pick = by_index[int(rng.integers(0, n_left))]
        pick = uniform_pick if explore else best
        shown[0, slot] = pick
        prop[0, slot] = (1 - epsilon) * (pick == best) + epsilon / n_left
        ranked.remove(pick)
        by_index.remove(pick)
    return shown, prop
