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
