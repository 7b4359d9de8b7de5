"""The rule-based ranker: popularity x freshness x affinity match. No training; one of the two fallbacks.

It reads whichever of its inputs the feature set supplies: all-time positives and those of the window nearest a
week (`engagement.*`), the age of the first declared timestamp attribute (`metadata.*_age_days`) and the user's
affinities to the document's declared attributes (`affinity.*`, the mean of those present). A missing input is
neutral.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.ranker import feature_matrix


@dataclass
class RuleBasedRanker:
    name: str = "rule_based"
    popularity: str | None = "engagement.positives"
    recent: str | None = "engagement.positives_7d"
    age: str | None = None
    affinities: tuple[str, ...] = ()
    recent_weight: float = 3.0
    freshness_half_life_days: float = 365.0
    match_floor: float = 0.1
    _names: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = [n for n in (self.popularity, self.recent, self.age) if n] + list(self.affinities)

    @classmethod
    def for_inputs(cls, names: list[str]) -> RuleBasedRanker:
        """The rule over the inputs a feature build supplies."""
        have = set(names)
        windows = sorted(
            int(m.group(1)) for n in names if (m := re.fullmatch(r"engagement\.positives_(\d+)d", n))
        )
        recent = None
        if windows:
            week = min((w for w in windows if w >= 7), default=max(windows))
            recent = f"engagement.positives_{week}d"
        age = next((n for n in names if n.startswith("metadata.") and n.endswith("_age_days")), None)
        affinities = [
            n for n in names if n.startswith("affinity.") and (n.endswith("_max") or f"{n}_max" not in have)
        ]
        return cls(popularity="engagement.positives" if "engagement.positives" in have else None, recent=recent,
                   age=age, affinities=tuple(affinities))  # fmt: skip

    @property
    def feature_names(self) -> list[str]:
        return self._names

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.score_matrix(feature_matrix(features, self.feature_names))

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        col = 0
        pos = recent = age = np.zeros(n)
        if self.popularity:
            pos, col = np.nan_to_num(X[:, col]), col + 1
        if self.recent:
            recent, col = np.nan_to_num(X[:, col]), col + 1
        if self.age:
            age, col = np.nan_to_num(X[:, col], nan=0.0), col + 1
        popularity = np.log1p(pos + self.recent_weight * recent) + 1e-3
        freshness = np.power(0.5, np.clip(age, 0, None) / self.freshness_half_life_days)
        if self.affinities:
            block = X[:, col : col + len(self.affinities)]
            present = ~np.isnan(block)
            match = np.where(
                present.any(axis=1), np.nansum(block, axis=1) / present.sum(axis=1).clip(min=1), np.nan
            )
        else:
            match = np.full(n, np.nan)
        category = self.match_floor + np.nan_to_num(match, nan=1.0 - self.match_floor)
        return popularity * freshness * category
