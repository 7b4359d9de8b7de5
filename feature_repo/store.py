"""The feature store adapter: build the offline tables, apply, materialize, and point-in-time retrieval.

Feast is imported lazily (it costs ~14 s per process) and only here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from feature_repo.definitions import FEATURE_SERVICE, JOIN_KEYS, VIEWS, build_objects, table_path
from feature_repo.segments import SegmentModel
from feature_repo.transforms import (
    CategoryVocabulary,
    document_tables,
    label_events,
    metadata_table,
    user_tables,
)
from reranker.lake import atomic_write_parquet
from reranker.settings import Layout

CONFIG_YAML = """# rendered by `reranker features apply` from the RERANKER_* settings: change those, not this file
project: reranker
provider: local
registry:
{registry}
online_store:
{online_store}
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


class FeatureStoreError(RuntimeError):
    pass


@dataclass
class FeatureBuild:
    rows: dict[str, int]
    vocabulary: list[str]
    segments: int
    data_end: str
    seconds: float


def build_from_lake(layout: Layout, seed: int) -> FeatureBuild:
    """`build_tables` over the lake's interactions and documents, into the layout's feature tables."""
    from reranker.lake import read_interactions

    events = read_interactions(layout.interactions)
    catalog = pd.read_parquet(layout.documents) if layout.documents.exists() else pd.DataFrame()
    return build_tables(events, catalog, layout.feature_tables, seed=seed)


def build_tables(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    tables_dir: Path,
    *,
    segment_fit_quantile: float = 0.5,
    n_segments: int = 6,
    seed: int = 7,
) -> FeatureBuild:
    """Write every feature view's offline table (microsecond timestamps, atomically) and the segment model,
    fitted on user snapshots of the first `segment_fit_quantile` of the events' time window."""
    import pickle

    started = time.perf_counter()
    if events.empty:
        raise FeatureStoreError("the lake holds no interactions: ingest some first")
    if catalog.empty:
        raise FeatureStoreError("the lake holds no document catalog: ingest one with --documents")
    vocab = CategoryVocabulary.from_catalog(catalog)
    labelled = label_events(events)
    users = user_tables(labelled, catalog, vocab)
    # Centroids come from the first part of the window only, so no evaluated list's segment depends on its future.
    fit_until = pd.to_datetime(events["timestamp"], utc=True).quantile(segment_fit_quantile)
    fit_rows = users[users["event_timestamp"] <= fit_until]
    segments = SegmentModel.fit(fit_rows if len(fit_rows) else users, n_segments=n_segments, seed=seed)
    users["user_segment"] = segments.assign(users)
    docs = document_tables(labelled)
    meta = metadata_table(catalog, vocab)
    frames = {"user": users, "document": docs}
    rows = {}
    tables_dir.mkdir(parents=True, exist_ok=True)
    for view, (entity, names) in VIEWS.items():
        source = meta if view == "document_metadata" else frames[entity]
        table = source[[JOIN_KEYS[entity], "event_timestamp", *names]].copy()
        table["event_timestamp"] = pd.to_datetime(table["event_timestamp"], utc=True).dt.as_unit("us")
        atomic_write_parquet(table, table_path(tables_dir, view))
        rows[view] = len(table)
    (tables_dir / "segments.pkl").write_bytes(pickle.dumps(segments))
    data_end = str(pd.to_datetime(events["timestamp"], utc=True).max())
    (tables_dir / "vocabulary.json").write_text(json.dumps({"categories": list(vocab.categories)}))
    return FeatureBuild(rows, list(vocab.categories), segments.n_segments, data_end,
                        round(time.perf_counter() - started, 3))  # fmt: skip


def serving_files(tables_dir: Path) -> dict[str, Path]:
    """What `build_tables` writes beside the tables that serving needs with a model (registered with it)."""
    return {name: tables_dir / name for name in ("segments.pkl", "vocabulary.json")}


def load_segments(tables_dir: Path) -> SegmentModel:
    import pickle

    return pickle.loads((tables_dir / "segments.pkl").read_bytes())


def write_config(repo_dir: Path, redis: str | None = None, registry: str | None = None) -> Path:
    """feature_store.yaml: the local provider and DuckDB offline store; the online store is SQLite under `repo_dir`,
    or Redis at `redis` (Feast's connection string: host:port[,db=N][,password=...][,ssl=true]); the registry a file
    under `repo_dir`, or the SQL database at `registry` (a SQLAlchemy URL, e.g. postgresql+psycopg://...)."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    if registry:
        registry_yaml = f"  registry_type: sql\n  path: {json.dumps(registry)}\n  cache_ttl_seconds: 60"
    else:
        registry_yaml = f"  registry_type: file\n  path: {(repo_dir / 'registry.db').resolve()}"
    if redis:
        online = f"  type: redis\n  connection_string: {json.dumps(redis)}"
    else:
        online = f"  type: sqlite\n  path: {(repo_dir / 'online.db').resolve()}"
    path = repo_dir / "feature_store.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(CONFIG_YAML.format(registry=registry_yaml, online_store=online))
    tmp.replace(path)
    return path


def open_store(repo_dir: Path) -> Any:
    from feast import FeatureStore

    if not (repo_dir / "feature_store.yaml").exists():
        raise FeatureStoreError(f"no feature_store.yaml in {repo_dir}: run `reranker features apply` first")
    return FeatureStore(repo_path=str(repo_dir))


def apply(repo_dir: Path, tables_dir: Path, redis: str | None = None, registry: str | None = None) -> Any:
    """Render the config (see `write_config`), then register entities, views and the feature service."""
    write_config(repo_dir, redis, registry)
    store = open_store(repo_dir)
    store.apply(build_objects(tables_dir))
    return store


def materialize(
    store: Any,
    tables_dir: Path,
    end: datetime | None = None,
    incremental: bool = False,
    late_arrival: timedelta = timedelta(days=1),
) -> dict[str, object]:
    """Load the newest snapshot of every entity into the online store.

    Full: from the oldest snapshot. Incremental: from the last materialization's end minus `late_arrival` (events
    ingested late produce snapshots timestamped before that end; Feast's own `materialize_incremental` would skip
    them), or full when a view was never materialized.
    """
    started = time.perf_counter()
    end = end or datetime.now(UTC)
    last_ends = [store.get_feature_view(view).most_recent_end_time for view in VIEWS] if incremental else []
    if incremental and all(t is not None for t in last_ends):
        start = min(last_ends) - late_arrival
        mode = "incremental"
    else:
        starts = []
        for view in VIEWS:
            ts = pd.read_parquet(table_path(tables_dir, view), columns=["event_timestamp"])["event_timestamp"]
            starts.append(ts.min())
        start = min(starts).to_pydatetime() - pd.Timedelta(seconds=1)
        mode = "full"
    store.materialize(start_date=start, end_date=end)
    return {
        "mode": mode,
        "start": str(start),
        "end": str(end),
        "seconds": round(time.perf_counter() - started, 3),
    }


def historical_features(store: Any, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for each (user_id, document_id, event_timestamp) row, in the same order.

    Every view is keyed by the user or by the document alone, so Feast joins each entity's views against that
    entity's distinct (key, timestamp) pairs (a list asks for one user at one time, 100 times over) and the
    answers are spread back over the rows. Every row asked for comes back (unmatched ones with nulls); the
    counts are checked.
    """
    if entity_rows.empty:
        raise FeatureStoreError("no entity rows to retrieve features for")
    ask = entity_rows[["user_id", "document_id", "event_timestamp"]].reset_index(drop=True)
    ask["event_timestamp"] = pd.to_datetime(ask["event_timestamp"], utc=True).dt.as_unit("us")
    service = store.get_feature_service(FEATURE_SERVICE)
    refs: dict[str, list[str]] = {}
    names: list[str] = []
    for projection in service.feature_view_projections:
        entity = VIEWS[projection.name][0]
        refs.setdefault(entity, []).extend(
            f"{projection.name_to_use()}:{f.name}" for f in projection.features
        )
        names.extend(f.name for f in projection.features)
    parts = []
    for entity, entity_refs in refs.items():
        key = [JOIN_KEYS[entity], "event_timestamp"]
        distinct = ask[key].drop_duplicates().reset_index(drop=True)
        got = store.get_historical_features(entity_df=distinct, features=entity_refs).to_df()
        if len(got) != len(distinct):
            raise FeatureStoreError(f"feature retrieval returned {len(got)} rows for {len(distinct)} asked")
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True).dt.as_unit("us")
        spread = ask[key].merge(got, on=key, how="left", validate="many_to_one")
        parts.append(spread.drop(columns=key))
    return pd.concat(parts, axis=1)[names]


def user_entity_key(user_key: str) -> Any:
    """Feast's entity key of a user: what its online stores index a user's rows by."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[JOIN_KEYS["user"]], entity_values=[Value(string_val=user_key)])


USER_DELETION_STORES = ("sqlite", "redis")


def check_user_deletion(store: Any) -> None:
    """Raise FeatureStoreError unless `delete_online_user` supports the store's online store (checked before
    anything is deleted, so that a user is never half removed)."""
    kind = store.config.online_store.type
    if kind not in USER_DELETION_STORES:
        raise FeatureStoreError(
            f"deleting a user is implemented for the {' and '.join(USER_DELETION_STORES)} online stores, not {kind}"
        )


def serialized_user_key(config: Any, user_key: str) -> bytes:
    """A user's entity key as Feast's SQLite online store stores it."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    return bytes(
        serialize_entity_key(
            user_entity_key(user_key),
            entity_key_serialization_version=config.entity_key_serialization_version,
        )
    )


def sqlite_user_tables(store: Any) -> tuple[str, list[str]]:
    """Feast's SQLite online store: its database path (a relative one resolved against the repo, as Feast does)
    and the tables of the user feature views, named as Feast names them."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

    config = store.config
    versioned = config.registry.enable_online_feature_view_versioning
    tables = [_table_id(config.project, store.get_feature_view(view), versioned)
              for view, (entity, _) in VIEWS.items() if entity == "user"]  # fmt: skip
    return SqliteOnlineStore._get_db_path(config), tables


def delete_online_user(store: Any, user_key: str) -> int:
    """Remove a user's rows from the online store (SQLite or Redis); returns the rows (Redis: keys) deleted."""
    import sqlite3

    from feast.infra.online_stores.sqlite import _quote_id

    check_user_deletion(store)
    config = store.config
    if config.online_store.type == "redis":
        # every user view of one user is one Redis hash, under Feast's key for the entity and project
        from feast.infra.online_stores.helpers import _redis_key

        online = store._get_provider().online_store
        client = online._get_client(config.online_store)
        key = _redis_key(config.project, user_entity_key(user_key), config.entity_key_serialization_version)
        return int(client.delete(key))
    path, user_tables = sqlite_user_tables(store)  # the tables serving reads a user from
    key = serialized_user_key(config, user_key)
    deleted = 0
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in user_tables:
            if table in tables:
                deleted += conn.execute(
                    f"DELETE FROM {_quote_id(table)} WHERE entity_key = ?", (key,)
                ).rowcount
    return deleted
