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
    coins, uniforms = _draws(rng, n, k)
    remaining = np.ones((n, m), dtype=bool)
    shown = np.empty((n, k), dtype=np.int64)
    prop = np.empty((n, k))
    rows = np.arange(n)
    for slot in range(k):
        masked = np.where(remaining, scores, -np.inf)
        best = masked.argmax(axis=1)
        n_left = m - slot
        explore = coins[:, slot] < epsilon
        # uniform choice among remaining: rank of a uniform draw among True entries
        u = (uniforms[:, slot] * n_left).astype(np.int64)
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
    """The same policy and the same random draws for one request (the stage's case), in plain Python over the
    ranking instead of per-slot arrays."""
    m = len(scores)
    coins, uniforms = (draws[0].tolist() for draws in _draws(rng, 1, k))
    ranked: list[int] = np.argsort(-scores, kind="stable").tolist()  # argmax's first-index tie rule
    by_index = list(range(m))
    shown, prop = [], []
    for slot in range(k):
        n_left = m - slot
        best = ranked[0]
        pick = by_index[int(uniforms[slot] * n_left)] if coins[slot] < epsilon else best
        shown.append(pick)
        prop.append((1 - epsilon) * (pick == best) + epsilon / n_left)
        ranked.remove(pick)
        by_index.remove(pick)
    return np.array([shown], dtype=np.int64), np.array([prop])


def _draws(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every random number the policy uses, in one call: per row and slot a coin (explore when below epsilon) and a
    uniform in [0, 1) that picks among the n_left remaining candidates as floor(u * n_left)."""
    coins, uniforms = rng.random((2, n, k))
    return coins, uniforms
