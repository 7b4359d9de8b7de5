"""User segments: k-means over a user's positives and declared affinities (the `user_segment` of the stage's
output; an explanation, not a model input)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class SegmentModel:
    pipeline: Pipeline
    n_segments: int
    affinities: tuple[str, ...]

    @classmethod
    def fit(
        cls, profiles: pd.DataFrame, affinities: list[str], n_segments: int = 6, seed: int = 7
    ) -> SegmentModel:
        X = _inputs(profiles, affinities)
        k = max(1, min(n_segments, len(X)))
        pipe = make_pipeline(StandardScaler(), KMeans(n_clusters=k, n_init=4, random_state=seed))
        pipe.fit(X)
        return cls(pipe, k, tuple(affinities))

    def assign(self, profiles: pd.DataFrame) -> np.ndarray:
        if profiles.empty:
            return np.empty(0, dtype=np.int64)
        return self.pipeline.predict(_inputs(profiles, list(self.affinities))).astype(np.int64)


def _inputs(frame: pd.DataFrame, affinities: list[str]) -> np.ndarray:
    """log(1 + positives) and the affinity arrays, side by side."""
    parts = [np.log1p(frame["positives"].to_numpy(dtype=float))[:, None]]
    for name in affinities:
        parts.append(np.vstack([np.asarray(v, dtype=float) for v in frame[name]]) if len(frame) else
                     np.zeros((0, 1)))  # fmt: skip
    return np.nan_to_num(np.hstack(parts))
