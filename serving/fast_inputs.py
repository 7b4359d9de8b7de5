"""Request-time model inputs in numpy, for one request (no pandas on the hot path).

The same quantities as the training-time reference `models.training_set.model_inputs` (pandas): a test holds the
two equal on random and real requests.
"""

from __future__ import annotations

import numpy as np

from feature_repo.transforms import AFF_COLS, CAT_COLS, LIST_RANKED
from models.lists import CANDIDATE_FEATURES
from models.rule_based import RuleBasedRanker
from serving.online_features import DOC_FEATURES, USER_FEATURES

_DOC = {n: i for i, n in enumerate(DOC_FEATURES)}
_CAT_IDX = [_DOC[c] for c in CAT_COLS]
_AFF_IDX = [USER_FEATURES.index(c) for c in AFF_COLS]
_RULE = RuleBasedRanker()


def _pct(values: np.ndarray) -> np.ndarray:
    """pandas `rank(pct=True)`: average ranks over the non-missing values (ties share their mean), NaN kept."""
    ok = ~np.isnan(values)
    out = np.full(len(values), np.nan)
    m = int(ok.sum())
    if m:
        v = values[ok]
        order = np.argsort(v, kind="stable")
        sorted_v = v[order]
        new_run = np.empty(m, dtype=bool)
        new_run[0], new_run[1:] = True, sorted_v[1:] != sorted_v[:-1]
        starts = np.flatnonzero(new_run)
        ends = np.empty_like(starts)
        ends[:-1], ends[-1] = starts[1:], m
        mean_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each run of equal values
        ranks = np.empty(m)
        ranks[order] = np.repeat(mean_rank, ends - starts)
        out[ok] = ranks / m
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
    cols: dict[str, np.ndarray] = {name: docs[:, j].copy() for name, j in _DOC.items()}
    for j, name in enumerate(USER_FEATURES):
        cols[name] = np.full(n, np.nan if user is None else user[j])
    cols["first_stage_score"] = first_stage.astype(float)
    for name in {k for o in overrides for k in o}:  # request features win over stored ones
        given = np.array([o.get(name, np.nan) for o in overrides], dtype=float)
        cols[name] = np.where(np.isnan(given), cols.get(name, np.full(n, np.nan)), given)
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
    for col in LIST_RANKED:
        cols[f"{col}_list_pct"] = _pct(cols[col])
    for col in CANDIDATE_FEATURES:
        cols.setdefault(col, np.full(n, np.nan))
    cols["rule_score"] = _RULE.score_arrays(cols["doc_n_positive"], cols["doc_n_positive_7d"], cols["doc_age_days"],
                                            cols["user_doc_affinity_max"])  # fmt: skip
    cols["rule_score_list_pct"] = _pct(cols["rule_score"])
    missing = np.full(n, np.nan)
    return np.column_stack([cols.get(name, missing) for name in names])
