"""Diversity: maximal marginal relevance (the seed's `mmr` stage) and intra-list diversity, over the documents'
attributes (categorical: equal or not; multi-valued: Jaccard; numeric: 1 - |a - b| / range), with `lambda` 1 all
relevance and 0 all diversity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reranker.featureset import DocumentKind, FeatureSet


def catalog_fields(fs: FeatureSet) -> list[str]:
    """MMR's default fields: the feature set's categorical document attributes, as `metadata.<name>`."""
    kinds = (DocumentKind.categorical, DocumentKind.multi_categorical)
    return [f"metadata.{name}" for name, attr in fs.documents.items() if attr.kind in kinds]


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, list | tuple) and not v)


def attribute_similarity(columns: Sequence[Sequence[Any]]) -> np.ndarray:
    """(n x n) mean similarity over the attribute columns (each a value per document); a pair missing a value counts
    0 for that attribute. The diagonal is 1."""
    n = len(columns[0]) if columns else 0
    total = np.zeros((n, n))
    for column in columns:
        values = list(column)
        present = np.array([not _is_missing(v) for v in values])
        if any(isinstance(v, list | tuple) for v in values):
            sets = [set(v) if isinstance(v, list | tuple) else {v} for v in values]
            vocab = {x: i for i, x in enumerate(sorted({x for s in sets for x in s}, key=str))}
            hot = np.zeros((n, max(len(vocab), 1)))
            for i, s in enumerate(sets):
                for x in s:
                    hot[i, vocab[x]] = 1.0
            inter = hot @ hot.T
            sizes = hot.sum(axis=1)
            union = sizes[:, None] + sizes[None, :] - inter
            sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        elif all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values if not _is_missing(v)
        ):
            x = np.array([float(v) if not _is_missing(v) else np.nan for v in values])
            span = np.nanmax(x) - np.nanmin(x) if present.any() else 0.0
            sim = 1.0 - np.abs(x[:, None] - x[None, :]) / span if span > 0 else np.ones((n, n))
        else:
            keys = np.array([str(v) for v in values], dtype=object)
            sim = (keys[:, None] == keys[None, :]).astype(float)
        sim = np.nan_to_num(sim) * (present[:, None] & present[None, :])
        total += sim
    out = total / max(len(columns), 1)
    np.fill_diagonal(out, 1.0)
    return out


def mmr_order(relevance: np.ndarray, similarity: np.ndarray, lam: float, k: int | None = None) -> np.ndarray:
    """Greedy maximal marginal relevance: each next document maximizes lam * relevance - (1 - lam) * (its largest
    similarity to those chosen), relevance min-max scaled to [0, 1]; ties to the more relevant, then the earlier.
    Returns the first k indexes (default all) in the chosen order."""
    n = len(relevance)
    k = n if k is None else min(k, n)
    rel = np.asarray(relevance, dtype=float)
    span = rel.max() - rel.min() if n else 0.0
    rel = (rel - rel.min()) / span if span > 0 else np.zeros(n)
    tiebreak = np.empty(n)
    tiebreak[np.argsort(-np.asarray(relevance, dtype=float), kind="stable")] = np.arange(n)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    closest = np.zeros(n)  # each document's largest similarity to the chosen ones
    for _ in range(k):
        gain = lam * rel - (1 - lam) * closest
        gain[taken] = -np.inf
        best = np.flatnonzero(gain >= gain.max() - 1e-12)
        pick = int(best[np.argmin(tiebreak[best])])
        chosen.append(pick)
        taken[pick] = True
        closest = np.maximum(closest, similarity[pick])
    return np.array(chosen, dtype=np.int64)


def intra_list_diversity(similarity: np.ndarray, shown: Sequence[int]) -> float:
    """Mean dissimilarity (1 - similarity) over the pairs of a shown list (NaN below two items)."""
    idx = np.asarray(shown, dtype=np.int64)
    if len(idx) < 2:
        return float("nan")
    sub = similarity[np.ix_(idx, idx)]
    upper = sub[np.triu_indices(len(idx), 1)]
    return float(np.mean(1.0 - upper))
