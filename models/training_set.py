"""Training sets: ranking lists joined, point in time, with the feature service's features via Feast."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.definitions import feature_names
from feature_repo.store import historical_features
from feature_repo.transforms import REQUEST_FEATURES, request_features
from models.lists import CANDIDATE_FEATURES
from models.rule_based import RuleBasedRanker

MODEL_FEATURES = [
    *feature_names(),
    *REQUEST_FEATURES,
    *CANDIDATE_FEATURES,
    "rule_score",
    "rule_score_list_pct",
]


@dataclass
class TrainingSet:
    frame: pd.DataFrame  # rows of a list contiguous, in list order
    features: list[str]

    @property
    def n_lists(self) -> int:
        return int(self.frame["list_id"].nunique())

    def digest(self) -> str:
        """Content digest of keys and labels (what MLflow records as the dataset's identity)."""
        keys = self.frame[["list_id", "document_id", "label"]]
        return hashlib.sha256(pd.util.hash_pandas_object(keys, index=False).to_numpy().tobytes()).hexdigest()[
            :16
        ]

    def window(self) -> tuple[str, str]:
        ts = pd.to_datetime(self.frame["event_timestamp"], utc=True)
        return str(ts.min()), str(ts.max())

    def subset(self, list_ids: Any) -> TrainingSet:
        return TrainingSet(self.frame[self.frame["list_id"].isin(set(list_ids))].reset_index(drop=True),
                           self.features)  # fmt: skip


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """Request-time inputs computed from retrieved features; the same code runs in training and serving."""
    frame = request_features(frame)
    for col in CANDIDATE_FEATURES:
        if col not in frame:
            frame[col] = np.nan
    frame["rule_score"] = RuleBasedRanker().score(frame)
    frame["rule_score_list_pct"] = frame.groupby("list_id", sort=False)["rule_score"].rank(pct=True)
    return frame


def build_training_set(store: Any, lists: pd.DataFrame) -> TrainingSet:
    """Features as of each list's timestamp for each (user, document); same row count and order as `lists`."""
    feats = historical_features(store, lists)
    frame = pd.concat([lists.reset_index(drop=True), feats], axis=1)
    frame = model_inputs(frame)
    order = pd.Categorical(frame["list_id"], categories=pd.unique(frame["list_id"]), ordered=True)
    frame = frame.assign(_o=order.codes, _i=np.arange(len(frame))).sort_values(["_o", "_i"])
    return TrainingSet(frame.drop(columns=["_o", "_i"]).reset_index(drop=True), list(MODEL_FEATURES))
