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
    """One row per list that has at least one relevant item; columns metric@k."""
    work = pd.DataFrame({"list_id": frame["list_id"].to_numpy(), "y": frame[label].to_numpy(dtype=float),
                         "s": np.asarray(scores, dtype=float)})  # fmt: skip
    rows = {}
    for list_id, grp in work.groupby("list_id", sort=False):
        y = grp["y"].to_numpy()
        if (y > 0).any():
            rows[list_id] = list_metrics(y, grp["s"].to_numpy(), ks)
    return pd.DataFrame.from_dict(rows, orient="index")
