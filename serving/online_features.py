"""Request-time features from what Feast materialized, fast.

Document features are read once from the online store (one batched Feast call) into an in-process matrix and
re-read when a materialization is newer than the cache; a lookup is then a numpy gather. User features are read
per request (with a short-lived cache that a pushed update invalidates): on the SQLite online store straight from
Feast's tables in one statement (`SqliteUserRead`), on any other store through its own `online_read`, one call per
user feature view (`ProviderUserRead`, e.g. Redis). Both give the rows and decoding of `get_online_features` (tests
hold them equal) without its per-call request planning. Per user here, in one run over 943 users: 0.48 ms through
Feast, 0.19 ms through `online_read`, 0.07 ms from the tables.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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

    def __post_init__(self) -> None:
        # one all-NaN row at the end: an unknown document's lookup (-1) lands there, so a request is one gather
        self._padded = np.vstack([self.matrix, np.full((1, self.matrix.shape[1]), np.nan)])
        self.matrix = self._padded[:-1]  # a view: the rows are held once

    def rows(self, document_ids: list[str]) -> np.ndarray:
        found = self.index.get
        return self._padded[
            np.fromiter((found(doc, -1) for doc in document_ids), np.int64, len(document_ids))
        ]


@dataclass
class OnlineFeatures:
    store: Any  # feast.FeatureStore
    document_ids: list[str]
    user_ttl_seconds: float = 5.0
    _docs: DocumentCache | None = None
    max_cached_users: int = 100_000
    _users: OrderedDict[str, tuple[float, dict[str, float] | None]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    direct_sqlite: bool = True  # SQLite online store: read its tables directly (SqliteUserRead)
    _user_read: Callable[[str], dict[str, Any]] | None = None

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
        values = self._read_user(user_key)
        known = None if all(v is None for v in values.values()) else {k: (np.nan if v is None else float(v))
                                                                       for k, v in values.items()}  # fmt: skip
        with self._lock:  # request threads share the cache
            self._users[user_key] = (now, known)
            self._users.move_to_end(user_key)
            while len(self._users) > self.max_cached_users:  # bounded: oldest entries go first
                self._users.popitem(last=False)
        return known

    def _read_user(self, user_key: str) -> dict[str, Any]:
        """The user's stored values by feature name (None where the store has none)."""
        if self._user_read is None:
            views = [(self.store.get_feature_view(view), list(names))
                     for view, (entity, names) in VIEWS.items() if entity == "user"]  # fmt: skip
            sqlite = self.direct_sqlite and self.store.config.online_store.type == "sqlite"
            self._user_read = (
                SqliteUserRead(self.store, views) if sqlite else ProviderUserRead(self.store, views)
            )
        return self._user_read(user_key)

    def invalidate_user(self, user_key: str) -> None:
        with self._lock:
            self._users.pop(user_key, None)


class ProviderUserRead:
    """A user's values through the configured online store's own `online_read` (any store: SQLite, Redis)."""

    def __init__(self, store: Any, views: list[tuple[Any, list[str]]]) -> None:
        self.store = store
        self.views = views  # (feast FeatureView, its feature names)

    def __call__(self, user_key: str) -> dict[str, Any]:
        from feast.type_map import feast_value_type_to_python_type

        from feature_repo.store import user_entity_key

        key = user_entity_key(user_key)
        online = self.store._get_provider()  # Feast's provider: online_read on the configured online store
        values: dict[str, Any] = {}
        for view, names in self.views:
            # a copy: Feast's Redis store appends its timestamp fields to the list it is given
            ((_, row),) = online.online_read(config=self.store.config, table=view, entity_keys=[key],
                                             requested_features=list(names))  # fmt: skip
            for name in names:
                stored = None if row is None else row.get(name)
                values[name] = None if stored is None else feast_value_type_to_python_type(stored)
        return values


class SqliteUserRead:
    """A user's values from Feast's SQLite online store in one statement over the user views' tables - Feast's
    own database path, table names, entity-key encoding and value protos (`feature_repo.store`, which `users
    delete` uses too), without its per-view queries and the timestamp parsing of every row (0.07 ms a user against
    0.19 through `online_read`). One connection per thread, read-only: writes stay with Feast."""

    SCALARS = frozenset({"float_val", "double_val", "int64_val", "int32_val", "bool_val", "string_val"})

    def __init__(self, store: Any, views: list[tuple[Any, list[str]]]) -> None:
        from feast.infra.online_stores.sqlite import _quote_id
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        from feature_repo.store import serialized_user_key, sqlite_user_tables

        self._decode = Value.FromString
        self._to_python = feast_value_type_to_python_type
        self._key = serialized_user_key

        self.path, tables = sqlite_user_tables(store)
        self.sql = " UNION ALL ".join(
            f"SELECT feature_name, value FROM {_quote_id(table)} WHERE entity_key = ?" for table in tables
        )
        self.n_tables = len(tables)
        self.names = [name for _, names in views for name in names]
        self.config = store.config
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        return conn

    def __call__(self, user_key: str) -> dict[str, Any]:
        key = self._key(self.config, user_key)
        values: dict[str, Any] = dict.fromkeys(self.names)
        for name, blob in self._conn().execute(self.sql, [key] * self.n_tables):
            if name in values:
                value = self._decode(blob)
                which = value.WhichOneof("val")
                values[name] = (getattr(value, which) if which in self.SCALARS
                                else None if which in (None, "null_val") else self._to_python(value))  # fmt: skip
        return values
