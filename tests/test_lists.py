"""The retrieval protocol's candidate pick, against a plain per-user reference."""

import numpy as np

from models.lists import _pick_candidates


def _reference(covisit: np.ndarray, popularity: np.ndarray, unseen: np.ndarray, n: int) -> np.ndarray:
    """One user at a time, over the unseen items only: n/2 by co-visitation, the rest by popularity."""
    idx = np.flatnonzero(unseen)
    cv, pp = covisit[idx], popularity[idx]
    by_cv = list(np.argsort(-cv, kind="stable")[: n // 2])
    by_pop = [i for i in np.argsort(-pp, kind="stable") if i not in by_cv]
    return idx[np.array(by_cv + by_pop[: n - len(by_cv)], dtype=int)]


def test_pick_equals_the_per_user_reference_with_ties_and_few_unseen_items():
    rng = np.random.default_rng(0)
    users, items, n = 40, 300, 100
    covisit = rng.integers(0, 4, (users, items)).astype(float)  # many ties: order must stay stable
    popularity = rng.integers(0, 6, items).astype(float)
    unseen = rng.random((users, items)) < rng.uniform(0.05, 0.9, (users, 1))  # some users have < n unseen
    unseen[0] = False
    unseen[1, :30] = True
    unseen[1, 30:] = False
    picks = _pick_candidates(covisit, popularity, unseen, n)
    for user in range(users):
        expected = _reference(covisit[user], popularity, unseen[user], n)
        np.testing.assert_array_equal(picks[user], expected)
        assert len(set(picks[user])) == len(picks[user]) == min(n, unseen[user].sum())
        assert unseen[user][picks[user]].all()
