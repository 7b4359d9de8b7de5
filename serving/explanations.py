"""Each returned item's explanation in `learned_rerank`: its top features by |SHAP| and its personalization score
(the SHAP of the inputs that depend on the user: user activity, affinities, collaborative signals), from the rows'
SHAP values."""

from __future__ import annotations

import numpy as np
from numba import njit


def summarize(
    contribs: np.ndarray, names: list[str], personal: np.ndarray, personalized: bool, top: int
) -> tuple[list[float], list[list[dict[str, object]]]]:
    """Per row of `contribs` (rows x names): the personalization score (the sum over the `personal` inputs; 0 when
    not personalized) and the `top` features by |SHAP|, largest first and ties in feature order (as a stable
    argsort), contributions rounded to 6 decimals (numpy's rounding, in one pass)."""
    rows = contribs.shape[0]
    top = min(top, contribs.shape[1])
    index = np.empty((rows, top), dtype=np.int64)
    value = np.empty((rows, top))
    scores = np.zeros(rows)
    _summarize(
        np.ascontiguousarray(contribs),
        np.asarray(personal, dtype=np.bool_),
        personalized,
        index,
        value,
        scores,
    )
    tops = [[{"name": names[j], "contribution": c} for j, c in zip(cols, vals, strict=True)]
            for cols, vals in zip(index.tolist(), np.round(value, 6).tolist(), strict=True)]  # fmt: skip
    return scores.tolist(), tops


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache), not in a request."""
    summarize(np.zeros((1, 2)), ["a", "b"], np.array([True, False]), personalized=True, top=1)


@njit(cache=True, nogil=True)
def _summarize(contribs, personal_mask, personalized, index, value, personal):  # type: ignore[no-untyped-def]
    rows, n = contribs.shape
    taken = np.zeros(n, dtype=np.bool_)
    for r in range(rows):
        if personalized:
            total = 0.0
            for j in range(n):
                if personal_mask[j]:
                    total += contribs[r, j]
            personal[r] = total
        taken[:] = False
        for t in range(index.shape[1]):
            best, best_size = -1, -1.0
            for j in range(n):
                size = abs(contribs[r, j])
                if np.isnan(size):  # last, as argsort puts NaN
                    size = -0.5
                if not taken[j] and size > best_size:
                    best, best_size = j, size
            taken[best] = True
            index[r, t] = best
            value[r, t] = contribs[r, best]
