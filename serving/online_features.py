"""Request-time features from what Feast materialized, fast.

Document features are read once from the online store (one batched Feast call) into an in-process matrix and
re-read when a materialization is newer than the cache; a lookup is then a numpy gather. User features are one
batched Feast read per request (one entity), with a short-lived cache that a pushed update invalidates.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feature_repo.definitions import VIEWS


def _refs(entity: str) -> list[str]:
    return [f"{view}:{name}" for view, (ent, names) in VIEWS.items() if ent == entity for name in names]


USER_REFS = _refs("user")
DOC_REFS = _refs("document")
USER_FEATURES = [r.split(":")[1] for r in USER_REFS]
DOC_FEATURES = [r.split(":")[1] for r in DOC_REFS]


@dataclass
class DocumentCache:
    index: dict[str, int]
    matrix: np.ndarray  # (n_docs, len(DOC_FEATURES)), NaN where missing
    loaded_at: float

    def rows(self, document_ids: list[str]) -> np.ndarray:
        out = np.full((len(document_ids), len(DOC_FEATURES)), np.nan)
        for i, doc in enumerate(document_ids):
            j = self.index.get(doc)
            if j is not None:
                out[i] = self.matrix[j]
        return out


@dataclass
class OnlineFeatures:
    store: Any  # feast.FeatureStore
    document_ids: list[str]
    user_ttl_seconds: float = 5.0
    _docs: DocumentCache | None = None
    max_cached_users: int = 100_000
    _users: OrderedDict[str, tuple[float, dict[str, float] | None]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def documents(self) -> DocumentCache:
        if self._docs is None:
            self.refresh_documents()
        assert self._docs is not None
        return self._docs

    def refresh_documents(self, batch: int = 5_000) -> None:
        parts = []
        for start in range(0, len(self.document_ids), batch):
            rows = [{"document_id": d} for d in self.document_ids[start : start + batch]]
            parts.append(self.store.get_online_features(features=DOC_REFS, entity_rows=rows).to_dict())
        index = {d: i for i, d in enumerate(self.document_ids)}
        matrix = np.full((len(self.document_ids), len(DOC_FEATURES)), np.nan)
        offset = 0
        for part in parts:
            n = len(part["document_id"])
            for j, name in enumerate(DOC_FEATURES):
                matrix[offset : offset + n, j] = [np.nan if v is None else float(v) for v in part[name]]
            offset += n
        with self._lock:
            self._docs = DocumentCache(index, matrix, time.time())

    def user(self, user_key: str) -> dict[str, float] | None:
        """The user's features, or None when the online store knows nothing of the user."""
        now = time.monotonic()
        hit = self._users.get(user_key)
        if hit is not None and now - hit[0] < self.user_ttl_seconds:
            return hit[1]
        got = self.store.get_online_features(
            features=USER_REFS, entity_rows=[{"user_id": user_key}]
        ).to_dict()
        values = {name: got[name][0] for name in USER_FEATURES}
        known = None if all(v is None for v in values.values()) else {k: (np.nan if v is None else float(v))
                                                                       for k, v in values.items()}  # fmt: skip
        with self._lock:  # request threads share the cache
            self._users[user_key] = (now, known)
            self._users.move_to_end(user_key)
            while len(self._users) > self.max_cached_users:  # bounded: oldest entries go first
                self._users.popitem(last=False)
        return known

    def invalidate_user(self, user_key: str) -> None:
        with self._lock:
            self._users.pop(user_key, None)
