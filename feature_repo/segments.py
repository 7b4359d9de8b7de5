"""User segments: k-means over user activity and category affinity (the `user_segment` of the stage's output)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_repo.transforms import AFF_COLS

SEGMENT_INPUTS = ["user_n_events", "user_positive_rate", *AFF_COLS]


@dataclass
class SegmentModel:
    pipeline: Pipeline
    n_segments: int

    @classmethod
    def fit(cls, user_snapshots: pd.DataFrame, n_segments: int = 6, seed: int = 7) -> SegmentModel:
        X = _inputs(user_snapshots)
        k = max(1, min(n_segments, len(X)))
        pipe = make_pipeline(StandardScaler(), KMeans(n_clusters=k, n_init=4, random_state=seed))
        pipe.fit(X)
        return cls(pipe, k)

    def assign(self, user_snapshots: pd.DataFrame) -> np.ndarray:
        if user_snapshots.empty:
            return np.empty(0, dtype=np.int64)
        return self.pipeline.predict(_inputs(user_snapshots)).astype(np.int64)


def _inputs(frame: pd.DataFrame) -> np.ndarray:
    X = frame[SEGMENT_INPUTS].to_numpy(dtype=float).copy()
    X[:, 0] = np.log1p(X[:, 0])
    return np.nan_to_num(X)
