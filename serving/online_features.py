"""Request-time features from what Feast materialized, fast, for whatever views the feature build generated.

Document views (attributes, engagement, factors, co-visitation neighbours) are read once from the online store (one
batched Feast call per 5,000 documents) into an in-process matrix laid out as the input kernel reads it
(`feature_repo.inputs.doc_layout`); a request's rows are one gather. Query x document click statistics are read the
same way into a two-level map (query -> document row -> values). User views are read per request (with a
short-lived cache that a pushed update invalidates): on the SQLite online store straight from Feast's tables in one
statement (`SqliteUserRead`), on any other store through its own `online_read`, one call per user view
(`ProviderUserRead`, e.g. Redis). Both give the rows and decoding of `get_online_features` (tests hold them equal)
without its per-call request planning.

A new feature build (its manifest) or materialization (its marker file) is picked up by `refresh`, which the stage
calls from its watcher thread: the new state is built beside the old one and swapped in whole.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.inputs import encode_documents, ragged, user_slots, user_vector
from feature_repo.manifest import MANIFEST, FeatureManifest
from feature_repo.store import MATERIALIZED
from feature_repo.text import TextIndex

log = logging.getLogger("reranker.serving")


@dataclass
class UserRow:
    values: np.ndarray  # user_layout
    recent: np.ndarray  # document rows of the recent positives, newest first
    segment: int | None


@dataclass
class DocumentTable:
    index: dict[str, int]  # document id -> row (the manifest's document order)
    matrix: np.ndarray  # (documents + 1) x doc_layout; the last row all NaN (an unknown document's row, -1)
    neighbours: tuple[np.ndarray, np.ndarray, np.ndarray]  # CSR by row: indptr, neighbour rows, similarities
    # each catalog attribute's stored values by row (strings, lists of strings, numbers; the last None): what the
    # pipeline's filters, rules and diversity read as `metadata.<name>`
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def attribute(self, name: str, rows: np.ndarray) -> list[Any]:
        column = self.attributes.get(name)
        return [None] * len(rows) if column is None else column[rows].tolist()

    def rows(self, document_ids: list[str]) -> np.ndarray:
        found = self.index.get
        return np.fromiter((found(doc, -1) for doc in document_ids), np.int64, len(document_ids))


@dataclass
class QueryStats:
    rows_of: dict[str, dict[int, int]]  # normalized query -> document row -> stats row
    matrix: np.ndarray  # (pairs + 1) x (ctr, impressions, clicks); the last row NaN

    def lookup(self, query: str | None, doc_rows: np.ndarray) -> np.ndarray:
        missing = len(self.matrix) - 1
        of_query = self.rows_of.get(query) if query else None
        if not of_query:
            return np.broadcast_to(self.matrix[missing], (len(doc_rows), 3))
        get = of_query.get
        return self.matrix[np.fromiter((get(r, missing) for r in doc_rows.tolist()), np.int64, len(doc_rows))]


@dataclass
class FeatureState:
    """Everything read from one feature build: swapped whole on refresh."""

    manifest: FeatureManifest
    documents: DocumentTable
    text: TextIndex | None
    query_stats: QueryStats | None
    user_views: list[tuple[Any, list[str]]]  # (Feast view, its features)
    stamp: tuple[float, float]
    user_slots: list[tuple[str, int, int]] = field(default_factory=list)
    _query_vectors: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=OrderedDict)

    def query_vector(self, query: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The query's TF-IDF vector, cached (queries repeat)."""
        if self.text is None or not query:
            return np.zeros(0, np.int64), np.zeros(0)
        hit = self._query_vectors.get(query)
        if hit is None:
            hit = self._query_vectors[query] = self.text.vector(query)
            if len(self._query_vectors) > 10_000:
                self._query_vectors.popitem(last=False)
        return hit


def _stamp(tables_dir: Path) -> tuple[float, float]:
    def mtime(name: str) -> float:
        path = tables_dir / name
        return path.stat().st_mtime if path.exists() else 0.0

    return mtime(MANIFEST), mtime(MATERIALIZED)


def _online_frame(store: Any, refs: list[str], key: str, keys: list[str], batch: int = 5_000) -> pd.DataFrame:
    parts = []
    for start in range(0, len(keys), batch):
        rows = [{key: k} for k in keys[start : start + batch]]
        got = store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
        parts.append(pd.DataFrame(got))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[key])


def _attributes(raw: pd.DataFrame, manifest: FeatureManifest) -> dict[str, np.ndarray]:
    """The catalog attributes as stored (arrays of lists as lists), by document row, with a trailing None."""
    out: dict[str, np.ndarray] = {}
    for name in manifest.feature_set.documents:
        col = f"document_attributes__{name}"
        if col not in raw:
            continue
        values = [v.tolist() if isinstance(v, np.ndarray) else None if v is None or (isinstance(v, float) and
                  np.isnan(v)) else v for v in raw[col].tolist()]  # fmt: skip
        column = np.empty(len(values) + 1, dtype=object)
        column[:-1] = values
        column[-1] = None
        out[name] = column
    return out


def load_state(store: Any, tables_dir: Path) -> FeatureState:
    stamp = _stamp(tables_dir)
    manifest = FeatureManifest.read(tables_dir)
    store.refresh_registry()
    specs = manifest.view_specs()
    doc_refs = [f"{v}:{c}" for v, s in specs.items() if s.entity == "document" for c in s.columns]
    raw = _online_frame(store, doc_refs, "document_id", manifest.documents)
    matrix = encode_documents(raw, manifest)
    padded = np.vstack([matrix, np.full((1, matrix.shape[1]), np.nan)])
    if "document_neighbors" in specs:
        indptr, indices = ragged(raw["document_neighbors__neighbors"].tolist())
        _, sims = ragged(raw["document_neighbors__similarities"].tolist())
        neighbours = (indptr, indices.astype(np.int64), sims.astype(np.float64))
    else:
        neighbours = (np.zeros(len(manifest.documents) + 1, np.int64), np.zeros(0, np.int64), np.zeros(0))
    documents = DocumentTable(manifest.doc_index(), padded, neighbours, _attributes(raw, manifest))
    query_stats = None
    keys_path = tables_dir / "query_document_keys.parquet"
    if "query_document" in specs and keys_path.exists():
        keys = pd.read_parquet(keys_path)
        got = _online_frame(store, [f"query_document:{c}" for c in ("ctr", "impressions", "clicks")],
                            "query_document_key", keys["query_document_key"].tolist())  # fmt: skip
        values = np.column_stack([pd.to_numeric(got[f"query_document__{c}"], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan) for c in ("ctr", "impressions", "clicks")]) if len(got) else np.zeros((0, 3))  # fmt: skip
        rows_of: dict[str, dict[int, int]] = {}
        doc_index = documents.index
        for i, (query, doc) in enumerate(zip(keys["query"], keys["document_id"], strict=True)):
            row = doc_index.get(str(doc))
            if row is not None and not np.isnan(values[i]).all():
                rows_of.setdefault(str(query), {})[row] = i
        query_stats = QueryStats(rows_of, np.vstack([values, np.full((1, 3), np.nan)]))
    user_views = [
        (store.get_feature_view(v), list(s.columns)) for v, s in specs.items() if s.entity == "user"
    ]
    return FeatureState(manifest, documents, TextIndex.load(tables_dir), query_stats, user_views, stamp,
                        user_slots(manifest))  # fmt: skip


class StoreUnavailable(RuntimeError):
    """The online store failed a read a moment ago (circuit open): the request falls back without waiting."""


@dataclass
class OnlineFeatures:
    store: Any  # feast.FeatureStore
    tables_dir: Path
    user_ttl_seconds: float = 5.0
    max_cached_users: int = 100_000
    direct_sqlite: bool = True  # SQLite online store: read its tables directly (SqliteUserRead)
    on_refresh: Callable[[FeatureState], None] = lambda state: None
    _state: FeatureState | None = None
    _users: OrderedDict[str, tuple[float, UserRow | None]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _user_read: Callable[[str], dict[str, Any]] | None = None
    # seconds a user read may wait on the store (SQLite lock, Redis socket); the stage sets 20 ms
    read_timeout: float = 1.0
    # after a failed read, requests fall back at once for this long, then one probes (the stage: 1 s)
    breaker_seconds: float = 0.0
    _down_until: float = 0.0

    def state(self) -> FeatureState:
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = load_state(self.store, self.tables_dir)
        return self._state

    @property
    def manifest(self) -> FeatureManifest:
        return self.state().manifest

    def refresh(self, force: bool = False) -> bool:
        """Reload when the feature build or its materialization changed since the state was read; the stage keeps
        serving the old state while the new one loads, and keeps it if the new one cannot be read."""
        current = self._state
        if not force and current is not None and _stamp(self.tables_dir) == current.stamp:
            return False
        try:
            state = load_state(self.store, self.tables_dir)
        except Exception as exc:
            log.error("feature refresh failed, keeping the loaded features: %r", exc)
            return False
        with self._lock:
            self._state = state
            self._user_read = None
            self._users.clear()
        log.info("features reloaded: feature set %s %s, %d documents", state.manifest.feature_set.name,
                 state.manifest.version, len(state.manifest.documents))  # fmt: skip
        self.on_refresh(state)
        return True

    def user(self, user_key: str) -> UserRow | None:
        """The user's features, or None when the online store knows nothing of the user."""
        now = time.monotonic()
        hit = self._users.get(user_key)
        if hit is not None and now - hit[0] < self.user_ttl_seconds:
            return hit[1]
        state = self.state()
        if now < self._down_until:
            raise StoreUnavailable("online store marked down after a failed read; probing again shortly")
        try:
            values = self._read_user(state, user_key)
        except Exception:
            self._down_until = time.monotonic() + self.breaker_seconds
            raise
        known = None if all(v is None for v in values.values()) else self._encode(state, values)
        with self._lock:  # request threads share the cache
            self._users[user_key] = (now, known)
            self._users.move_to_end(user_key)
            while len(self._users) > self.max_cached_users:  # bounded: oldest entries go first
                self._users.popitem(last=False)
        return known

    @staticmethod
    def _encode(state: FeatureState, values: dict[str, Any]) -> UserRow:
        vector = user_vector(values, state.manifest, state.user_slots)
        recent = values.get("user_history__recent_positives")
        segment = values.get("user_segment__segment")
        return UserRow(vector, np.asarray(recent if recent is not None else [], dtype=np.int64),
                       None if segment is None else int(segment))  # fmt: skip

    def _read_user(self, state: FeatureState, user_key: str) -> dict[str, Any]:
        """The user's stored values by `view__feature` (None where the store has none)."""
        if self._user_read is None:
            sqlite = self.direct_sqlite and self.store.config.online_store.type == "sqlite"
            self._user_read = SqliteUserRead(self.store, state.user_views, self.read_timeout) if sqlite else \
                ProviderUserRead(self.store, state.user_views, self.read_timeout)  # fmt: skip
        return self._user_read(user_key)

    def invalidate_user(self, user_key: str) -> None:
        with self._lock:
            self._users.pop(user_key, None)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A protobuf varint at `at`: (value, the position after it)."""
    result = shift = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


DOUBLE, INT64, DOUBLE_LIST, INT64_LIST = (
    0x29,
    0x20,
    0x7A,
    0x72,
)  # Value's fields 5, 4, 15, 14 with their wire types


def decode_stored(blob: bytes, fallback: Callable[[bytes], Any]) -> Any:
    """A value as Feast's online stores keep it (a serialized `feast.types.Value`), decoded straight from its wire
    format for the shapes the feature build stores - a double, an int64, a list of doubles (packed: read as one
    array), a list of int64 - and by `fallback` (protobuf) for anything else. A test holds it equal to Feast's."""
    if not blob:
        return fallback(blob)
    tag = blob[0]
    try:
        if tag == DOUBLE and len(blob) == 9:
            return struct.unpack_from("<d", blob, 1)[0]
        if tag == INT64:
            value, end = _varint(blob, 1)
            if end == len(blob):
                return _signed(value)
        elif tag in (DOUBLE_LIST, INT64_LIST):
            size, at = _varint(blob, 1)
            if at + size != len(blob):
                return fallback(blob)
            if size == 0:
                return np.zeros(0, np.float64 if tag == DOUBLE_LIST else np.int64)
            if blob[at] != 0x0A:  # not the packed `val` field
                return fallback(blob)
            length, at = _varint(blob, at + 1)
            if at + length != len(blob):
                return fallback(blob)
            if tag == DOUBLE_LIST:
                return np.frombuffer(blob, dtype="<f8", count=length // 8, offset=at).astype(np.float64)
            out = []
            while at < len(blob):
                value, at = _varint(blob, at)
                out.append(_signed(value))
            return np.array(out, dtype=np.int64)
    except (IndexError, struct.error):
        pass
    return fallback(blob)


def _decode_value(value: Any, to_python: Callable[[Any], Any]) -> Any:
    which = value.WhichOneof("val")
    if which in ("float_val", "double_val", "int64_val", "int32_val", "bool_val", "string_val"):
        return getattr(value, which)
    if which in ("double_list_val", "float_list_val", "int64_list_val", "int32_list_val"):
        return np.asarray(getattr(value, which).val)
    if which in (None, "null_val"):
        return None
    return to_python(value)


class ProviderUserRead:
    """A user's values through the configured online store's own `online_read` (any store: SQLite, Redis)."""

    def __init__(self, store: Any, views: list[tuple[Any, list[str]]], timeout: float = 0.02) -> None:
        from feast.type_map import feast_value_type_to_python_type

        self.store = store
        self.views = views  # (feast FeatureView, its feature names)
        self._to_python = feast_value_type_to_python_type
        if store.config.online_store.type == "redis":  # a stalled Redis answers within the timeout, not never
            online = store._get_provider().online_store
            client = online._get_client(store.config.online_store)
            # redis-py retries a failed call 3 times with backoff up to seconds by default: a stalled server then
            # held a request ~6 s (measured by benchmarks/faults.py); a read is tried once, the fallback serves
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            if hasattr(client, "set_retry"):
                client.set_retry(Retry(NoBackoff(), 0))
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                pool.connection_kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
                pool.reset()  # connections made from now on carry the timeouts

    def __call__(self, user_key: str) -> dict[str, Any]:
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
                values[f"{view.name}__{name}"] = (
                    None if stored is None else _decode_value(stored, self._to_python)
                )
        return values


class SqliteUserRead:
    """A user's values from Feast's SQLite online store in one statement over the user views' tables - Feast's
    own database path, table names, entity-key encoding and value protos (`feature_repo.store`, which `users
    delete` uses too), without its per-view queries and the timestamp parsing of every row. One connection per
    thread, read-only: writes stay with Feast."""

    def __init__(self, store: Any, views: list[tuple[Any, list[str]]], timeout: float = 0.02) -> None:
        from feast.infra.online_stores.sqlite import _quote_id
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        from feature_repo.store import serialized_user_key, sqlite_user_tables

        to_python = feast_value_type_to_python_type
        self._fallback = lambda blob: _decode_value(Value.FromString(blob), to_python)
        self._key = serialized_user_key
        self.path, tables = sqlite_user_tables(store, [v for v, _ in views])
        self.sql = " UNION ALL ".join(
            f"SELECT {i}, feature_name, value FROM {_quote_id(table)} WHERE entity_key = ?"
            for i, table in enumerate(tables)
        )
        self.n_tables = len(tables)
        self.keys = {
            (i, name): f"{view.name}__{name}" for i, (view, names) in enumerate(views) for name in names
        }
        self.config = store.config
        self._prefix = self._key(self.config, "")[
            :-4
        ]  # the serialized key without the value's length and bytes
        if self._prefix + struct.pack("<I", 1) + b"x" != self._key(self.config, "x"):
            raise RuntimeError(
                "Feast's entity key format changed: the direct SQLite read no longer matches it"
            )
        self._local = threading.local()
        self.timeout = timeout

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; re-opened when the database file was replaced (checked once a second), so a
        store restored or re-materialized into a new file is read without a restart."""
        local = self._local
        conn = getattr(local, "conn", None)
        now = time.monotonic()
        if conn is not None and now - local.checked > 1.0:
            local.checked = now
            try:
                st = os.stat(self.path)
                moved = (st.st_dev, st.st_ino) != local.inode
            except FileNotFoundError:
                moved = True
            if moved:
                conn.close()
                conn = local.conn = None
        if conn is None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:  # the store is unavailable: never created here
                raise sqlite3.OperationalError(f"no online database at {self.path}") from None
            # a locked database answers within the timeout instead of SQLite's 5 s: the request falls back in budget
            conn = local.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
            local.inode, local.checked = (st.st_dev, st.st_ino), now
        return conn

    def __call__(self, user_key: str) -> dict[str, Any]:
        encoded = user_key.encode()
        key = (
            self._prefix + struct.pack("<I", len(encoded)) + encoded
        )  # Feast's serialization, checked at start
        values: dict[str, Any] = dict.fromkeys(self.keys.values())
        keys, fallback = self.keys, self._fallback
        for table, name, blob in self._conn().execute(self.sql, [key] * self.n_tables):
            out = keys.get((table, name))
            if out is not None:
                values[out] = decode_stored(blob, fallback)
        return values
