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
    Registry(first)
    assert mlflow.get_tracking_uri() == first  # MLflow itself points at it in this process
    later = Settings(data_dir=tmp_path / "later")
    assert later.tracking_uri() == later.layout.mlflow_uri  # not the first registry's store
