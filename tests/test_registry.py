"""The registry adapter leaves the process environment alone."""

from __future__ import annotations

from pathlib import Path


def test_a_registry_does_not_redirect_the_settings_of_later_ones(tmp_path: Path, monkeypatch):
    import mlflow

    from models.registry import Registry
    from reranker.settings import Settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first = f"sqlite:///{tmp_path / 'first.db'}"
    before = mlflow.get_tracking_uri()
    registry = Registry(first, create=True)
    assert mlflow.get_tracking_uri() == before  # creating a registry leaves MLflow's process-wide URIs alone
    with registry.active():
        assert (
            mlflow.get_tracking_uri() == first == mlflow.get_registry_uri()
        )  # its fluent calls go to its store
    assert mlflow.get_tracking_uri() == before
    later = Settings(data_dir=tmp_path / "later")
    assert later.tracking_uri() == later.layout.mlflow_uri  # not the first registry's store


def _registry_with_versions(tmp_path: Path, versions: int = 3):
    from models.registry import Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", create=True)
    registry.client.create_registered_model("m")
    source = tmp_path / "model"
    source.mkdir()
    for v in range(1, versions + 1):
        registry.client.create_model_version("m", source.as_uri(), tags={"ndcg_at_10": f"0.{v}"})
    return registry


def test_the_quick_tables_know_the_pinned_mlflow_schema():
    """The fast path is on only for this schema revision: after an MLflow upgrade this fails until it is re-checked."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from models.registry_tables import SCHEMA_REVISION

    heads = ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_heads()
    assert heads == [SCHEMA_REVISION]


def test_the_quick_tables_read_and_write_what_mlflow_reads_and_writes(tmp_path: Path):
    from models.registry import CANARY, CHAMPION, PREVIOUS_CHAMPION, promote, rollback
    from models.registry_tables import open_tables

    registry = _registry_with_versions(tmp_path)
    tables = open_tables(registry.tracking_uri)
    assert tables is not None
    registry.set_alias("m", CHAMPION, "1")
    registry.set_alias("m", CANARY, "2")
    registry.tag_version("m", "2", {"gate.x": "pass"})
    assert tables.exists("m") and not tables.exists("other")
    assert tables.aliases("m") == registry.aliases("m") == {CHAMPION: "1", CANARY: "2"}
    assert [(v.version, v.tags) for v in tables.versions("m")] == [
        (str(mv.version), dict(mv.tags)) for mv in registry.versions("m")
    ]
    assert tables.version_tags("m", "2") == registry.version_tags("m", "2")

    assert promote(tables, "m", "2") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert registry.aliases("m") == {
        CHAMPION: "2",
        PREVIOUS_CHAMPION: "1",
    }  # MLflow reads what the tables wrote
    assert registry.version_tags("m", "2")["promoted_from"] == "1"
    assert rollback(tables, "m", "worse") == {CHAMPION: "1"}
    assert registry.aliases("m") == {CHAMPION: "1"}
    assert registry.version_tags("m", "2")["rolled_back_reason"] == "worse"
    tables.tag_version("m", "2", {"rolled_back_reason": "again"})  # a tag written twice is replaced
    assert registry.version_tags("m", "2")["rolled_back_reason"] == "again"
    registry.client.set_registered_model_alias("m", CANARY, "3")  # and the tables read what MLflow wrote
    assert tables.aliases("m") == {CHAMPION: "1", CANARY: "3"}


def test_quick_tables_step_aside_for_an_unknown_schema_and_never_create_a_database(tmp_path: Path):
    import sqlite3

    import pytest

    from models.registry import RegistryMissing
    from models.registry_tables import open_tables

    with pytest.raises(RegistryMissing):
        open_tables(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
    registry = _registry_with_versions(tmp_path, versions=1)
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'newer'")
    assert open_tables(registry.tracking_uri) is None
    assert open_tables("http://localhost:5000") is None
