"""Offline evaluation on logged lists that does not favour the logging order.

Click labels on logged lists concentrate where the logging policy put items: a naive click metric (NDCG on clicks)
rewards rankings that agree with the logging order, whatever their true quality. Under the position-based click
model, P(click) = theta(position) * gamma(relevance): the probability that a position is examined, times the
probability that an examined item is clicked.

- **Examination propensities** `theta` are estimated from the logs by expectation-maximization over that model
  (Wang et al. 2018, "Position bias estimation for unbiased learning to rank in personal search"), with relevance
  per (query, document) (per document when there are no queries). The logging policy's exploration (the logged
  propensities are below 1 where a slot was explored) places the same document at different positions, which is
  what identifies theta; only ratios theta(k) / theta(0) are used.
- **IPW-DCG@k** of a ranking of a logged list's shown items: sum over its clicked items of
  1 / theta(position it was logged at) / log2(1 + its rank under the evaluated ranking), over ranks <= k
  (Joachims et al. 2017, "Unbiased learning-to-rank with biased feedback"). Each click weighted by
  1/theta is an unbiased estimate of the item's relevance, so the mean over lists estimates the DCG the ranking
  would earn with true relevance-probability gains, not the logging policy's share of clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_THETA = 0.05  # examination propensities are clipped here: bounded weights (at most 20x)


@dataclass
class Propensities:
    theta: np.ndarray  # relative examination propensity by 0-based position (theta[0] = 1)
    impressions: np.ndarray  # impressions seen per position
    iterations: int

    def of(self, positions: np.ndarray) -> np.ndarray:
        pos = np.clip(np.asarray(positions, dtype=np.int64), 0, len(self.theta) - 1)
        return np.maximum(self.theta[pos], MIN_THETA)

    def to_dict(self) -> dict[str, object]:
        return {"theta": [round(float(t), 4) for t in self.theta], "impressions": self.impressions.tolist(),
                "iterations": self.iterations}  # fmt: skip


def estimate_propensities(positions: np.ndarray, clicks: np.ndarray, keys: np.ndarray, max_position: int = 20,
                          iterations: int = 100, tol: float = 1e-6) -> Propensities:  # fmt: skip
    """theta(k)/theta(0) by EM under the position-based model; `keys`: what relevance is shared by (e.g. query and
    document). Positions beyond `max_position` pool into the last."""
    pos = np.clip(np.asarray(positions, dtype=np.int64), 0, max_position)
    c = np.asarray(clicks, dtype=np.float64)
    key_codes, _ = pd.factorize(pd.Series(keys))
    n_pos, n_keys = int(pos.max()) + 1, int(key_codes.max()) + 1
    per_pos = np.bincount(pos, minlength=n_pos).astype(float)
    per_key = np.bincount(key_codes, minlength=n_keys).astype(float)
    theta = np.full(n_pos, 0.5)
    gamma = np.clip(np.bincount(key_codes, weights=c, minlength=n_keys) / per_key.clip(min=1.0), 0.01, 0.99)
    done = 0
    for step in range(1, iterations + 1):
        done = step
        t, g = theta[pos], gamma[key_codes]
        denom = np.clip(1.0 - t * g, 1e-12, None)
        examined = c + (1 - c) * t * (1 - g) / denom
        relevant = c + (1 - c) * g * (1 - t) / denom
        new_theta = np.bincount(pos, weights=examined, minlength=n_pos) / per_pos.clip(min=1.0)
        gamma = np.clip(
            np.bincount(key_codes, weights=relevant, minlength=n_keys) / per_key.clip(min=1.0), 1e-6, 1.0
        )
        change = float(np.abs(new_theta - theta).max())
        theta = new_theta
        if change < tol:
            break
    relative = theta / max(theta[0], 1e-12)
    return Propensities(np.clip(relative, 0.0, None), per_pos.astype(np.int64), done)


def logged_keys(frame: pd.DataFrame) -> np.ndarray:
    """What a logged item's relevance is shared by: its document under the list's normalized query (or the
    document alone)."""
    doc = frame["document_id"].astype(str)
    if "query" in frame and frame["query"].notna().any():
        query = frame["query"].fillna("").astype(str).str.lower().str.strip()
        return (query + "\x1f" + doc).to_numpy()
    return doc.to_numpy()


def ipw_dcg(frame: pd.DataFrame, scores: np.ndarray, propensities: Propensities, ks: tuple[int, ...] = (5, 10),
            click: str = "label") -> pd.DataFrame:  # fmt: skip
    """Per logged list (every list, clicked or not): IPW-DCG@k of the ranking `scores` gives its shown items."""
    work = pd.DataFrame({"list_id": frame["list_id"].to_numpy(), "s": np.asarray(scores, dtype=float),
                         "w": (frame[click].to_numpy(dtype=float) > 0) / propensities.of(frame["position"].to_numpy())})  # fmt: skip
    work["_i"] = np.arange(len(work))
    work["s"] = work["s"].fillna(-np.inf)
    # rank within the list by score, ties in row order (stable), as the metrics do
    order = work.sort_values(["list_id", "s", "_i"], ascending=[True, False, True], kind="stable")
    order["rank"] = order.groupby("list_id", sort=False).cumcount() + 1
    out = {}
    for k in ks:
        gain = np.where(order["rank"] <= k, order["w"] / np.log2(1.0 + order["rank"]), 0.0)
        out[f"ipw_dcg@{k}"] = pd.Series(gain, index=order.index).groupby(order["list_id"]).sum()
    first = pd.unique(frame["list_id"])
    return pd.DataFrame(out).reindex(first)
