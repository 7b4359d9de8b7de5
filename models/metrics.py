"""Ranking metrics per list: NDCG@k, MRR@k, MAP@k and Recall@k.

NDCG uses exponential gain 2^rel - 1 (LightGBM's default label gain); for binary labels it equals linear gain.
A list with no relevant item has no defined value and is left out (callers report how many).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("ndcg", "mrr", "map", "recall")


def dcg(gains: np.ndarray) -> float:
    discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    return float((gains * discounts).sum())


def list_metrics(labels: np.ndarray, scores: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Metrics of one list (labels graded >= 0). Ties in score are broken by original order."""
    order = np.argsort(-scores, kind="stable")
    ranked = labels[order]
    relevant = ranked > 0
    n_rel = int(relevant.sum())
    ideal = np.sort(labels)[::-1]
    out: dict[str, float] = {}
    for k in ks:
        top = ranked[:k]
        idcg = dcg(2.0 ** ideal[:k] - 1)
        out[f"ndcg@{k}"] = dcg(2.0**top - 1) / idcg if idcg > 0 else np.nan
        hits = relevant[:k]
        first = int(np.argmax(hits)) if hits.any() else -1
        out[f"mrr@{k}"] = 1.0 / (first + 1) if first >= 0 else 0.0
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        out[f"map@{k}"] = float((precision_at * hits).sum() / min(n_rel, k)) if n_rel else np.nan
        out[f"recall@{k}"] = float(hits.sum() / n_rel) if n_rel else np.nan
    return out


def per_list(frame: pd.DataFrame, scores: np.ndarray, ks: tuple[int, ...] = (5, 10, 20),
             label: str = "label") -> pd.DataFrame:  # fmt: skip
    """One row per list that has at least one relevant item (in order of first appearance); columns metric@k.

    The same values as `list_metrics` on each list, computed for all lists at once: rows are ordered by list, then
    score (descending, NaN last), then original order, and each metric is a weighted count per list
    (at 250k test lists a Python loop over the lists took minutes)."""
    codes, uniques = pd.factorize(frame["list_id"], sort=False)
    y = frame[label].to_numpy(dtype=float)
    s = np.asarray(scores, dtype=float)
    n = len(uniques)
    rows = np.arange(len(y))
    # by list, then by score within it (ties in row order, NaN last)
    ranked = y[np.lexsort((rows, -s, codes))]
    ideal = y[np.lexsort((-y, codes))]
    code = np.sort(codes, kind="stable")  # the list of each position in `ranked` and `ideal`
    sizes = np.bincount(codes, minlength=n)
    starts = np.cumsum(sizes) - sizes

    def per_list_sum(weights: np.ndarray) -> np.ndarray:
        return np.bincount(code, weights=weights, minlength=n)

    rank = rows - starts[code]  # 0-based, within the list
    discount = 1.0 / np.log2(rank + 2.0)
    relevant = ranked > 0
    n_rel = per_list_sum(relevant)
    keep = n_rel > 0
    if not keep.any():
        return pd.DataFrame()  # as `list_metrics` over no list: no rows, no columns
    before = np.cumsum(relevant) - relevant
    hits_above = before - before[starts][code]  # relevant items ranked above, within the list
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            top = rank < k
            hit = top & relevant
            idcg = per_list_sum(np.where(top, (2.0**ideal - 1) * discount, 0.0))
            out[f"ndcg@{k}"] = np.where(idcg > 0, per_list_sum(np.where(top, (2.0**ranked - 1) * discount, 0.0)) / idcg,
                                        np.nan)  # fmt: skip
            first = np.full(n, np.inf)
            np.minimum.at(first, code[hit], rank[hit])
            out[f"mrr@{k}"] = np.where(np.isfinite(first), 1.0 / (first + 1.0), 0.0)
            precision = per_list_sum(np.where(hit, (hits_above + 1) / (rank + 1.0), 0.0))
            out[f"map@{k}"] = np.where(keep, precision / np.minimum(n_rel, k), np.nan)
            out[f"recall@{k}"] = np.where(keep, per_list_sum(hit) / n_rel, np.nan)
    return pd.DataFrame({c: v[keep] for c, v in out.items()}, index=pd.Index(uniques)[keep])
