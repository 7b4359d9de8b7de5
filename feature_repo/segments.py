"""User segments: k-means over a user's positives and declared affinities (the `user_segment` of the stage's
output; an explanation, not a model input).

Each segment is named by what its users prefer more than users at large: the affinity slot whose mean share in the
segment most exceeds its mean over everyone (`drama_fan`; a numeric attribute's lowest or highest bucket:
`low_price_fan`, `high_price_fan`), made unique by the segment's activity (`heavy_drama_fan`); without declared
affinities, by activity alone (`light_user` ... `heavy_user`). The names follow from the fitted segments, so a
retrain that finds the same segments gives them the same names whatever numbers k-means gives them. A segment that
holds no value a fifth above users at large (new users, whose shares are the prior) is named by activity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_repo.manifest import Encodings
from reranker.featureset import DocumentKind

ACTIVITY = ("light", "casual", "regular", "active", "heavy", "power")


@dataclass
class SegmentModel:
    pipeline: Pipeline
    n_segments: int
    affinities: tuple[str, ...]
    names: tuple[str, ...] = field(default=())

    @classmethod
    def fit(cls, profiles: pd.DataFrame, affinities: list[str], n_segments: int = 6, seed: int = 7,
            encodings: Encodings | None = None) -> SegmentModel:  # fmt: skip
        X = _inputs(profiles, affinities)
        k = max(1, min(n_segments, len(X)))
        pipe = make_pipeline(StandardScaler(), KMeans(n_clusters=k, n_init=4, random_state=seed))
        pipe.fit(X)
        labels = pipe.predict(X)
        return cls(pipe, k, tuple(affinities), segment_names(X, labels, k, affinities, encodings))

    def assign(self, profiles: pd.DataFrame) -> np.ndarray:
        if profiles.empty:
            return np.empty(0, dtype=np.int64)
        return self.pipeline.predict(_inputs(profiles, list(self.affinities))).astype(np.int64)


def slot_labels(affinities: list[str], encodings: Encodings | None, widths: list[int]) -> list[str | None]:
    """What each affinity slot stands for: a value (`drama`) or a numeric bucket (`low_price`); None for the slots
    of no known value ('other', and room left for values to come), whose share is the smoothing prior."""
    out: list[str | None] = []
    for name, width in zip(affinities, widths, strict=True):
        enc = encodings.attributes.get(name) if encodings is not None else None
        if enc is not None and enc.kind is DocumentKind.numeric:
            for s in range(width):
                out.append(f"low_{name}" if s == 0 else f"high_{name}" if s == width - 1 else f"mid_{name}")
        else:
            values = list(enc.values) if enc is not None else []
            out += [_slug(values[s]) if s < len(values) else None for s in range(width)]
    return out


def segment_names(X: np.ndarray, labels: np.ndarray, k: int, affinities: list[str],
                  encodings: Encodings | None) -> tuple[str, ...]:  # fmt: skip
    """Readable, unique names of the k segments of rows X (log positives, then the affinity slots)."""
    activity = np.array([X[labels == c, 0].mean() if (labels == c).any() else 0.0 for c in range(k)])
    level = np.empty(k, dtype=np.int64)
    level[np.argsort(activity, kind="stable")] = np.arange(k)
    tiers = [ACTIVITY[min(len(ACTIVITY) - 1, round(i * (len(ACTIVITY) - 1) / max(k - 1, 1)))] for i in level]
    if X.shape[1] == 1 or not affinities:
        names = [f"{t}_user" for t in tiers]
    else:
        widths = ([encodings.attributes[a].slots for a in affinities] if encodings is not None else
                  [(X.shape[1] - 1) // len(affinities)] * len(affinities))  # fmt: skip
        slots = slot_labels(affinities, encodings, widths)
        named = np.array([label is not None for label in slots])
        overall = X[:, 1:].mean(axis=0)
        names = []
        for c in range(k):
            members = X[labels == c, 1:]
            mean = members.mean(axis=0) if len(members) else overall
            # the value whose share the segment holds most above everyone's, by at least a fifth more than
            # everyone: else the segment is named by activity
            lift = np.where(named & (mean >= 1.2 * overall), mean - overall, -np.inf)
            best = int(np.argmax(lift))
            names.append(
                f"{slots[best]}_fan" if np.isfinite(lift[best]) and lift[best] > 0 else f"{tiers[c]}_user"
            )
        for c in range(k):  # the same preference twice: told apart by activity
            if names.count(names[c]) > 1:
                names = [f"{tiers[i]}_{n}" if n == names[c] else n for i, n in enumerate(names)]
    seen: dict[str, int] = {}
    out = []
    for name in names:  # still equal (same preference, same tier): numbered
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return tuple(out)


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")[:40] or "value"


def _inputs(frame: pd.DataFrame, affinities: list[str]) -> np.ndarray:
    """log(1 + positives) and the affinity arrays, side by side."""
    parts = [np.log1p(frame["positives"].to_numpy(dtype=float))[:, None]]
    for name in affinities:
        parts.append(np.vstack([np.asarray(v, dtype=float) for v in frame[name]]) if len(frame) else
                     np.zeros((0, 1)))  # fmt: skip
    return np.nan_to_num(np.hstack(parts))
