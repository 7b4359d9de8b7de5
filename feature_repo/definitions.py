"""Feast objects: entities, sources, feature views and the one feature service the model trains and serves on.

Built for a given offline-table directory (Feast's DuckDB store wants absolute paths). `feature_store.yaml`
variants live in infra/; `reranker features apply` renders the local one under the data dir.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feature_repo.transforms import AFF_COLS, DOC_CTR, DOC_METADATA, DOC_POPULARITY, USER_ACTIVITY

FEATURE_SERVICE = "reranker_features"
VIEWS: dict[str, tuple[str, list[str]]] = {
    "user_activity": ("user", USER_ACTIVITY),
    "user_category_affinity": ("user", AFF_COLS),
    "user_segment": ("user", ["user_segment"]),
    "document_popularity": ("document", DOC_POPULARITY),
    "document_ctr": ("document", DOC_CTR),
    "document_metadata": ("document", DOC_METADATA),
}
JOIN_KEYS = {"user": "user_id", "document": "document_id"}
INT_FEATURES = {"user_segment"}


def table_path(tables_dir: Path, view: str) -> Path:
    return (tables_dir / f"{view}.parquet").resolve()


def feature_refs() -> list[str]:
    return [f"{view}:{name}" for view, (_, names) in VIEWS.items() for name in names]


def feature_names() -> list[str]:
    return [name for _, names in VIEWS.values() for name in names]


def build_objects(tables_dir: Path) -> list[Any]:
    from feast import Entity, FeatureService, FeatureView, Field, FileSource
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    entities = {
        "user": Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
                       description="A (hashed) user id."),
        "document": Entity(name="document", join_keys=["document_id"], value_type=ValueType.STRING,
                           description="A rerankable document (item)."),
    }  # fmt: skip
    views: list[Any] = []
    for view, (entity, names) in VIEWS.items():
        source = FileSource(
            name=f"{view}_source",
            path=str(table_path(tables_dir, view)),
            timestamp_field="event_timestamp",
        )
        views.append(
            FeatureView(
                name=view,
                entities=[entities[entity]],
                ttl=timedelta(0),  # snapshots are cumulative: the newest one before a request is always valid
                schema=[Field(name=n, dtype=Int64 if n in INT_FEATURES else Float64) for n in names],
                source=source,
                online=True,
                tags={"room": "feature_repo"},
            )
        )
    service = FeatureService(name=FEATURE_SERVICE, features=views, description="Every input of the ranker.")
    return [*entities.values(), *views, service]
