"""The registry's aliases and version tags read and written straight in MLflow's SQL tables, for the commands that
touch nothing else (`models list`, `promote`, `rollback`): importing MLflow takes 6-13 s here, SQLAlchemy a fraction
of a second.

Only on the schema revision the pinned MLflow writes (`SCHEMA_REVISION`, checked against MLflow's own migrations by
a test): on any other revision, or a store that is not SQL, `open_tables` returns None and the caller goes through
MLflow's client. The writes are the ones MLflow's SQLAlchemy store makes for the same calls (a merge of one alias or
tag row, in the version's workspace), each in one transaction; a test holds every read and write equal to
MlflowClient's on a real registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_REVISION = "dc11669786a5"  # MLflow 3.17's alembic head (tests/test_registry.py checks it)


@dataclass
class VersionRow:
    """What the commands read of a model version (the attributes of MLflow's ModelVersion they use)."""

    version: str
    tags: dict[str, str] = field(default_factory=dict)


class RegistryTables:
    """The same alias and tag operations as `models.registry.Registry`, on MLflow's tables."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def exists(self, name: str) -> bool:
        return self._scalar("SELECT count(*) FROM registered_models WHERE name = :name", name=name) > 0

    def aliases(self, name: str) -> dict[str, str]:
        rows = self._rows("SELECT alias, version FROM registered_model_aliases WHERE name = :name", name=name)
        return {alias: str(version) for alias, version in rows}

    def versions(self, name: str) -> list[VersionRow]:
        found = {
            str(v): VersionRow(str(v))
            for (v,) in self._rows("SELECT version FROM model_versions WHERE name = :name", name=name)
        }
        for version, key, value in self._rows(
            "SELECT version, key, value FROM model_version_tags WHERE name = :name", name=name
        ):
            if str(version) in found:
                found[str(version)].tags[key] = value
        return sorted(found.values(), key=lambda row: int(row.version))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        rows = self._rows("SELECT key, value FROM model_version_tags WHERE name = :name AND version = :version",
                          name=name, version=int(version))  # fmt: skip
        return dict(rows)

    def _workspace(self, conn: Any, name: str, version: str) -> str:
        from sqlalchemy import text

        found = conn.execute(text("SELECT workspace FROM model_versions WHERE name = :name AND version = :version"),
                             {"name": name, "version": int(version)}).scalar()  # fmt: skip
        if found is None:
            from models.registry import ModelNotFound

            raise ModelNotFound(f"model {name!r} has no version {version}")
        return str(found)

    def _merge(
        self, table: str, keys: dict[str, Any], values: dict[str, Any], name: str, version: str
    ) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            row = {**keys, "workspace": self._workspace(conn, name, version)}
            where = " AND ".join(f'"{k}" = :{k}' for k in row)
            conn.execute(text(f"DELETE FROM {table} WHERE {where}"), row)
            cols = {**row, **values}
            conn.execute(text(f"INSERT INTO {table} ({', '.join(f'{chr(34)}{k}{chr(34)}' for k in cols)}) "
                              f"VALUES ({', '.join(':' + k for k in cols)})"), cols)  # fmt: skip

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._merge("registered_model_aliases", {"name": name, "alias": alias}, {"version": int(version)}, name,
                    version)  # fmt: skip

    def delete_alias(self, name: str, alias: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM registered_model_aliases WHERE name = :name AND alias = :alias"),
                         {"name": name, "alias": alias})  # fmt: skip

    def tag_version(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._merge("model_version_tags", {"name": name, "version": int(version), "key": key},
                        {"value": str(value)[:5000]}, name, version)  # fmt: skip


def open_tables(tracking_uri: str) -> RegistryTables | None:
    """MLflow's tables behind `tracking_uri` when they are a SQL store on the known schema revision, else None."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    if not tracking_uri.startswith(("sqlite:", "postgresql")):
        return None
    from models.registry import require_database

    require_database(tracking_uri)
    engine = create_engine(tracking_uri)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        engine.dispose()
        return None
    if revision != SCHEMA_REVISION:
        engine.dispose()
        return None
    return RegistryTables(engine)
