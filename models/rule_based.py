"""The rule-based ranker: popularity x freshness x category match. No training; serving's default fallback."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.ranker import feature_matrix


@dataclass
class RuleBasedRanker:
    name: str = "rule_based"
    recent_weight: float = 3.0
    freshness_half_life_days: float = 365.0
    match_floor: float = 0.1

    @property
    def feature_names(self) -> list[str]:
        return ["doc_n_positive", "doc_n_positive_7d", "doc_age_days", "user_doc_affinity_max"]

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.score_arrays(*feature_matrix(features, self.feature_names).T)

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        return self.score_arrays(*X.T)

    def score_arrays(
        self, pos: np.ndarray, pos_recent: np.ndarray, age: np.ndarray, match: np.ndarray
    ) -> np.ndarray:
        """The same score from the four input columns (serving's numpy path calls this directly)."""
        popularity = np.log1p(np.nan_to_num(pos) + self.recent_weight * np.nan_to_num(pos_recent)) + 1e-3
        freshness = np.power(
            0.5, np.clip(np.nan_to_num(age, nan=0.0), 0, None) / self.freshness_half_life_days
        )
        category = self.match_floor + np.nan_to_num(match, nan=1.0 - self.match_floor)
        return popularity * freshness * category
