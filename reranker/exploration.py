"""The exploration policy of the stage (and of the synthetic logging policy): epsilon-greedy per slot, with the
exact probability of every choice, so that logs support off-policy evaluation and debiased retraining."""

from __future__ import annotations

import numpy as np
from numba import njit


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
    # each candidate's rank (0 the best; ties in index order, NaN last): the best remaining one is the lowest
    # rank left, whatever the scores (masking shown ones with -inf would tie them with -inf scores)
    rank = np.empty((n, m), dtype=np.int64)
    np.put_along_axis(rank, np.argsort(-scores, axis=1, kind="stable"), np.arange(m)[None, :], axis=1)
    for slot in range(k):
        best = np.where(remaining, rank, m).argmin(axis=1)
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
    """The same policy and the same random draws for one request (the stage's case), compiled: numba draws from
    the Generator itself (its state advances as numpy's would), so the stream is the one `_rows` takes."""
    shown = np.empty((1, k), dtype=np.int64)
    prop = np.empty((1, k))
    _one_row_slots(np.ascontiguousarray(scores, dtype=np.float64), k, epsilon, rng, shown[0], prop[0])
    return shown, prop


def warm_up() -> None:
    """Compile the one-request kernel now (or load it from numba's cache), not in a request."""
    _one_row(np.zeros(2), 1, 0.5, np.random.default_rng(0))


@njit(cache=True, nogil=True)
def _one_row_slots(scores, k, epsilon, rng, shown, prop):  # type: ignore[no-untyped-def]
    m = scores.shape[0]
    ranked = np.argsort(-scores, kind="mergesort")  # stable: argmax's first-index tie rule
    taken = np.zeros(m, dtype=np.bool_)
    head = 0
    for slot in range(k):
        n_left = m - slot
        while taken[ranked[head]]:
            head += 1
        best = ranked[head]
        explore = rng.random() < epsilon  # scalar draws: the same numbers as _rows' size=1 arrays
        u = rng.integers(0, n_left)
        pick = best
        for i in range(m):  # the uniform choice: the u-th candidate not yet shown, in index order
            if not taken[i]:
                if u == 0:
                    if explore:
                        pick = i
                    break
                u -= 1
        shown[slot] = pick
        prop[slot] = (1 - epsilon) * (pick == best) + epsilon / n_left
        taken[pick] = True
