"""Feast objects generated from a feature build's manifest: entities, one file source and feature view per table,
and the one feature service the model trains and serves on.

Built for a given offline-table directory (Feast's DuckDB store wants absolute paths). `feature_store.yaml`
variants live in infra/; `reranker features apply` renders the local one under the data dir.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feature_repo.manifest import FeatureManifest

FEATURE_SERVICE = "reranker_features"
JOIN_KEYS = {"user": "user_id", "document": "document_id", "query_document": "query_document_key"}
ENTITY_DESCRIPTIONS = {
    "user": "A (hashed) user id.",
    "document": "A rerankable document (item).",
    "query_document": "A document under a normalized query.",
}


def table_path(tables_dir: Path, view: str) -> Path:
    return (tables_dir / f"{view}.parquet").resolve()


def feature_refs(manifest: FeatureManifest) -> list[str]:
    return [f"{view}:{name}" for view, spec in manifest.view_specs().items() for name in spec.columns]


def _dtype(name: str) -> Any:
    from feast.types import Array, Float64, Int64, String

    scalar = {"Float64": Float64, "Int64": Int64, "String": String}
    if name.startswith("Array(") and name.endswith(")"):
        return Array(scalar[name[6:-1]])
    return scalar[name]


def build_objects(tables_dir: Path, manifest: FeatureManifest) -> list[Any]:
    from feast import Entity, FeatureService, FeatureView, Field, FileSource
    from feast.value_type import ValueType

    specs = manifest.view_specs()
    entities = {name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING,
                             description=ENTITY_DESCRIPTIONS[name])
                for name, key in JOIN_KEYS.items() if any(s.entity == name for s in specs.values())}  # fmt: skip
    views: list[Any] = []
    for view, spec in specs.items():
        source = FileSource(name=f"{view}_source", path=str(table_path(tables_dir, view)),
                            timestamp_field="event_timestamp")  # fmt: skip
        views.append(
            FeatureView(
                name=view,
                entities=[entities[spec.entity]],
                ttl=timedelta(0),  # snapshots are cumulative: the newest one before a request is always valid
                schema=[Field(name=n, dtype=_dtype(t)) for n, t in spec.columns.items()],
                source=source,
                online=True,
                tags={
                    "room": "feature_repo",
                    "feature_set": manifest.feature_set.name,
                    "feature_set_version": manifest.version,
                    "epoch_keyed": str(spec.epoch_keyed).lower(),
                },
            )
        )
    service = FeatureService(name=FEATURE_SERVICE, features=views,
                             description=f"Every input of the ranker (feature set {manifest.feature_set.name}).")  # fmt: skip
    return [*entities.values(), *views, service]
