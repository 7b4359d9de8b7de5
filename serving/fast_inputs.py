"""Request-time model inputs for one request, compiled (no pandas, and one numba pass on the hot path).

The same quantities as the training-time reference `models.training_set.model_inputs` (pandas): a test holds the
two equal on random and real requests, request overrides included. The request's columns are laid out once per
model (`_plan`): stored document columns and the first-stage score (`base`, where request values override stored
ones), the user's values, the derived columns (affinities, age, first-stage rank, rule score, list percentiles),
and request features the store does not hold.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from feature_repo.transforms import AFF_COLS, CAT_COLS, LIST_RANKED
from models.rule_based import RuleBasedRanker
from serving.online_features import DOC_FEATURES, USER_FEATURES

BASE = [*DOC_FEATURES, "first_stage_score"]
PCT_OF = [*LIST_RANKED, "rule_score"]
DERIVED = ["user_doc_affinity", "user_doc_affinity_max", "doc_age_days", "first_stage_rank", "rule_score",
           *[f"{c}_list_pct" for c in PCT_OF]]  # fmt: skip
_BASE = {n: i for i, n in enumerate(BASE)}
_USER = {n: i for i, n in enumerate(USER_FEATURES)}
_DERIVED = frozenset(DERIVED)
_N_DERIVED = len(DERIVED)
_JOINED = {n: i for i, n in enumerate([*BASE, *DERIVED])}  # each column of the joined (base | derived) matrix
_CAT_IDX = np.array([_BASE[c] for c in CAT_COLS], dtype=np.int64)
_AFF_IDX = np.array([_USER[c] for c in AFF_COLS], dtype=np.int64)
_PCT_SRC = np.array([_JOINED[c] for c in PCT_OF], dtype=np.int64)  # the columns the percentiles rank
_RULE = RuleBasedRanker()
# the base columns the derived ones read: positives, positives in 7 days, creation day, first-stage score
_RULE_INPUTS = np.array([_BASE[c] for c in ("doc_n_positive", "doc_n_positive_7d", "doc_created_days",
                                            "first_stage_score")], dtype=np.int64)  # fmt: skip
_KIND_JOINED, _KIND_USER, _KIND_NONE = 0, 1, 2


@lru_cache(maxsize=64)
def _plan(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each model input: (kind, index) - a column of the joined base|derived matrix, a user value, or none."""
    kind = np.full(len(names), _KIND_NONE, dtype=np.int64)
    index = np.zeros(len(names), dtype=np.int64)
    for j, name in enumerate(names):
        if name in _JOINED:
            kind[j], index[j] = _KIND_JOINED, _JOINED[name]
        elif name in _USER:
            kind[j], index[j] = _KIND_USER, _USER[name]
    return kind, index


def assemble(
    docs: np.ndarray,
    user: np.ndarray | None,
    first_stage: np.ndarray,
    overrides: list[dict[str, float]],
    now_days: float,
    names: list[str],
) -> np.ndarray:
    """(n_candidates x len(names)) inputs. docs: rows in DOC_FEATURES order; user: USER_FEATURES order or None."""
    n = len(first_stage)
    user_row = np.full(len(USER_FEATURES), np.nan) if user is None else np.asarray(user, dtype=np.float64)
    joined = np.empty((n, len(BASE) + len(DERIVED)))
    joined[:, : len(DOC_FEATURES)] = docs
    joined[:, len(DOC_FEATURES)] = first_stage
    extra: dict[str, np.ndarray] = {}
    for name in {k for o in overrides for k in o}:  # request features win over stored ones
        given = np.array([o.get(name, np.nan) for o in overrides], dtype=float)
        if name in _BASE:
            col = joined[:, _BASE[name]]
            joined[:, _BASE[name]] = np.where(np.isnan(given), col, given)
        elif name not in _DERIVED:  # derived features are computed from the inputs, whatever the request says
            stored = user_row[_USER[name]] if name in _USER else np.nan
            extra[name] = np.where(np.isnan(given), stored, given)
    has_affinity = user is not None and not np.isnan(user_row[_AFF_IDX]).all()
    _derive(joined, np.ascontiguousarray(docs[:, _CAT_IDX]), user_row[_AFF_IDX], has_affinity, now_days,
            _RULE.recent_weight, _RULE.freshness_half_life_days, _RULE.match_floor, _RULE_INPUTS, _PCT_SRC)  # fmt: skip
    kind, index = _plan(tuple(names))
    X = np.empty((n, len(names)))
    _gather(X, joined, user_row, kind, index)
    for j, name in enumerate(names):
        if name in extra:
            X[:, j] = extra[name]
    return X


def warm_up() -> None:
    """Compile the kernels now (a second or two the first time in a process without numba's on-disk cache),
    so that the first request does not pay for it against its time budget."""
    docs = np.full((2, len(DOC_FEATURES)), np.nan)
    assemble(docs, np.zeros(len(USER_FEATURES)), np.array([1.0, np.nan]), [{}, {}], 0.0, ["rule_score"])


@njit(cache=True, nogil=True)
def _nan_to_num(v, nan):  # type: ignore[no-untyped-def]
    """numpy's nan_to_num of one value (NaN -> nan, +-inf -> the largest finite magnitudes)."""
    if np.isnan(v):
        return nan
    if np.isinf(v):
        return np.finfo(np.float64).max if v > 0 else -np.finfo(np.float64).max
    return v


@njit(cache=True, nogil=True)
def _derive(joined, cat, aff, has_affinity, now_days, recent_weight, half_life, match_floor, inputs, pct_src):  # type: ignore[no-untyped-def]  # fmt: skip
    """The derived columns, written into `joined` after the base ones (in the order of DERIVED)."""
    n, n_cat = cat.shape
    d = joined.shape[1] - _N_DERIVED  # the first derived column
    positives, positives_7d, created, first = inputs[0], inputs[1], inputs[2], inputs[3]
    for r in range(n):
        total, weighted, best = 0.0, 0.0, -np.inf
        for c in range(n_cat):
            x = cat[r, c]
            total += x  # NaN when a category flag is missing: then no affinity
            if has_affinity:
                product = aff[c] * x
                if not np.isnan(product):
                    weighted += product
                if x > 0 and not np.isnan(aff[c]) and aff[c] > best:
                    best = aff[c]
        if has_affinity and total > 0:
            joined[r, d] = weighted / max(total, 1.0)
            joined[r, d + 1] = best if np.isfinite(best) else np.nan
        else:
            joined[r, d] = np.nan
            joined[r, d + 1] = np.nan
        age = now_days - joined[r, created]
        joined[r, d + 2] = age
        # RuleBasedRanker.score_arrays, one row
        popularity = np.log1p(_nan_to_num(joined[r, positives], 0.0)
                              + recent_weight * _nan_to_num(joined[r, positives_7d], 0.0)) + 1e-3  # fmt: skip
        freshness = np.power(0.5, max(_nan_to_num(age, 0.0), 0.0) / half_life)
        category = match_floor + _nan_to_num(joined[r, d + 1], 1.0 - match_floor)
        joined[r, d + 4] = popularity * freshness * category
    # the first-stage rank: 1 for the highest score, ties in candidate order, missing scores unranked
    joined[:, d + 3] = np.nan
    scored = np.flatnonzero(~np.isnan(joined[:, first]))
    order = scored[np.argsort(-joined[scored, first], kind="mergesort")]
    for position in range(order.shape[0]):
        joined[order[position], d + 3] = position + 1.0
    # pandas rank(pct=True): average ranks over the non-missing values (ties share their mean), NaN kept
    for p in range(pct_src.shape[0]):
        out = d + 5 + p
        values = joined[:, pct_src[p]].copy()
        joined[:, out] = np.nan
        valid = np.flatnonzero(~np.isnan(values))
        order = valid[np.argsort(values[valid], kind="mergesort")]
        m = order.shape[0]
        start = 0
        while start < m:
            end = start
            while end + 1 < m and values[order[end + 1]] == values[order[start]]:
                end += 1
            pct = ((start + end) / 2.0 + 1.0) / m
            for k in range(start, end + 1):
                joined[order[k], out] = pct
            start = end + 1


@njit(cache=True, nogil=True)
def _gather(X, joined, user_row, kind, index):  # type: ignore[no-untyped-def]
    n = X.shape[0]
    for j in range(kind.shape[0]):
        k = kind[j]
        for r in range(n):
            if k == _KIND_JOINED:
                X[r, j] = joined[r, index[j]]
            elif k == _KIND_USER:
                X[r, j] = user_row[index[j]]
            else:
                X[r, j] = np.nan
