"""The ranker interface every scorer implements: the learned model, the rule-based fallback, the first stage."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Ranker(Protocol):
    name: str

    @property
    def feature_names(self) -> list[str]:
        """The inputs it reads; absent ones are treated as missing."""
        ...

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """One score per row (higher ranks first). Rows of different lists may be mixed."""
        ...

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """The same from a matrix whose columns are `feature_names` in order (serving's hot path)."""
        ...


def feature_matrix(features: pd.DataFrame, names: list[str]) -> np.ndarray:
    """C-contiguous float matrix of the named columns; a column the frame lacks is all-missing (NaN)."""
    out = np.full((len(features), len(names)), np.nan, dtype=np.float64)
    for j, name in enumerate(names):
        if name in features:
            out[:, j] = pd.to_numeric(features[name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
    return out


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """Every score a number: candidates without one (NaN, inf) go after the others, in the order they came, below
    the lowest score."""
    bad = ~np.isfinite(scores)
    if not bad.any():
        return scores
    out = scores.astype(float, copy=True)
    floor = float(out[~bad].min()) if (~bad).any() else 0.0
    out[bad] = floor - 1.0 - np.arange(int(bad.sum()), dtype=float)
    return out


class FirstStageRanker:
    """Keeps the retriever's order: the baseline every reranker must beat."""

    name = "first_stage"

    @property
    def feature_names(self) -> list[str]:
        return ["first_stage.score"]

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.score_matrix(feature_matrix(features, self.feature_names))

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """The first-stage score; candidates without one keep their order below those with one."""
        score = X[:, 0]
        missing = np.isnan(score)
        if not missing.any():
            return score.copy()
        floor = np.nanmin(score) if (~missing).any() else 0.0
        return np.where(missing, floor - 1.0 - np.arange(len(score)) / max(len(score), 1), score)
