"""Request-time model inputs in numpy, for one request (no pandas on the hot path).

The same quantities as the training-time reference `models.training_set.model_inputs` (pandas): a test holds the
two equal on random and real requests.
"""

from __future__ import annotations

import numpy as np

from feature_repo.transforms import AFF_COLS, CAT_COLS, LIST_RANKED
from models.rule_based import RuleBasedRanker
from serving.online_features import DOC_FEATURES, USER_FEATURES

_DOC = {n: i for i, n in enumerate(DOC_FEATURES)}
_USER = {n: i for i, n in enumerate(USER_FEATURES)}
_CAT_IDX = [_DOC[c] for c in CAT_COLS]
_AFF_IDX = [USER_FEATURES.index(c) for c in AFF_COLS]
_RULE = RuleBasedRanker()


def _pct(values: np.ndarray) -> np.ndarray:
    """pandas `rank(pct=True)` of each column of (n x k) `values`: average ranks over the non-missing values (ties
    share their mean), NaN kept - all columns in one sort."""
    n = values.shape[0]
    order = np.argsort(values, axis=0, kind="stable")  # NaN sorts last
    ordered = np.take_along_axis(values, order, axis=0)
    valid = ~np.isnan(ordered)
    row = np.arange(n)[:, None]
    run_start = np.ones_like(valid)
    run_start[1:] = ordered[1:] != ordered[:-1]
    run_end = np.ones_like(valid)
    run_end[:-1] = run_start[1:]
    first = np.maximum.accumulate(np.where(run_start, row, 0), axis=0)
    last = np.minimum.accumulate(np.where(run_end, row, n - 1)[::-1], axis=0)[::-1]
    pct = np.where(valid, ((first + last) / 2.0 + 1.0) / np.maximum(valid.sum(axis=0), 1), np.nan)
    out = np.empty_like(pct)
    np.put_along_axis(out, order, pct, axis=0)
    return out


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
    user_row = np.full(len(USER_FEATURES), np.nan) if user is None else user
    # columns by name (document columns are views of `docs`: nothing below writes into them); user features are one
    # value for every candidate and are broadcast into the matrix at the end
    cols: dict[str, np.ndarray] = {name: docs[:, j] for name, j in _DOC.items()}
    cols["first_stage_score"] = first_stage.astype(float)
    for name in {k for o in overrides for k in o}:  # request features win over stored ones
        given = np.array([o.get(name, np.nan) for o in overrides], dtype=float)
        stored = cols.get(name, np.full(n, user_row[_USER[name]] if name in _USER else np.nan))
        cols[name] = np.where(np.isnan(given), stored, given)
    cat = docs[:, _CAT_IDX]
    n_cat = cat.sum(axis=1)
    if user is None or np.isnan(user[_AFF_IDX]).all():
        cols["user_doc_affinity"] = np.full(n, np.nan)
        cols["user_doc_affinity_max"] = np.full(n, np.nan)
    else:
        aff = np.broadcast_to(user[_AFF_IDX], cat.shape)
        weighted = np.nansum(aff * cat, axis=1)
        cols["user_doc_affinity"] = np.where(n_cat > 0, weighted / np.maximum(n_cat, 1), np.nan)
        matched = np.where((cat > 0) & ~np.isnan(aff), aff, -np.inf).max(axis=1)
        cols["user_doc_affinity_max"] = np.where((n_cat > 0) & np.isfinite(matched), matched, np.nan)
    cols["doc_age_days"] = now_days - cols["doc_created_days"]
    fs = cols["first_stage_score"]
    ok = ~np.isnan(fs)
    rank = np.full(n, np.nan)
    if ok.any():
        order = np.argsort(-fs[ok], kind="stable")
        r = np.empty(ok.sum())
        r[order] = np.arange(1, ok.sum() + 1)
        rank[ok] = r
    cols["first_stage_rank"] = rank
    cols["rule_score"] = _RULE.score_arrays(cols["doc_n_positive"], cols["doc_n_positive_7d"], cols["doc_age_days"],
                                            cols["user_doc_affinity_max"])  # fmt: skip
    ranked = [*LIST_RANKED, "rule_score"]
    pct = _pct(np.column_stack([cols[col] for col in ranked]))
    for j, col in enumerate(ranked):
        cols[f"{col}_list_pct"] = pct[:, j]
    X = np.empty((n, len(names)))
    for j, name in enumerate(names):
        values = cols.get(name)
        X[:, j] = values if values is not None else (user_row[_USER[name]] if name in _USER else np.nan)
    return X
