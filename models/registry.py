"""The MLflow registry adapter: versions, tags and aliases (champion, canary, previous_champion).

The model is logged as a native LightGBM Booster (the sklearn flavour fails to reload an LGBMRanker), with what
serving needs beside it under `serving/`: the model card (`models.card`: its ordered inputs, their encodings, the
feature set, the fallback, the gates) and the segment model.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CHAMPION = "champion"
CANARY = "canary"
PREVIOUS_CHAMPION = "previous_champion"
PIP_REQUIREMENTS = ["lightgbm>=4.7,<4.8", "numpy", "pandas"]


class ModelNotFound(LookupError):
    pass


class RegistryMissing(RuntimeError):
    """The registry's database is not where it is expected: never created silently in its place."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other store)."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str | None
    booster: Any
    card: Any  # models.card.ModelCard
    serving_dir: Path | None = None

    @property
    def features(self) -> list[str]:
        return list(self.card.input_names)


# MLflow's fluent APIs read process-wide URIs: one registry at a time sets them, inside `Registry.active()`
_MLFLOW_URIS = threading.RLock()


def _set_mlflow_uris(tracking: str, registry: str) -> None:
    """mlflow.set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI to the process environment, where
    Settings.tracking_uri() would later read them: keep MLflow's in-process state, put the environment back."""
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def require_database(tracking_uri: str) -> None:
    """Raises RegistryMissing when `tracking_uri` names a SQLite database that does not exist."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise RegistryMissing(f"no MLflow database at {path}: train a model first (`reranker train`), or restore "
                              "the database if it was moved")  # fmt: skip


class AliasStore(Protocol):
    """What promotion and rollback need of a registry: `Registry` (MLflow's client) or, for the quick commands,
    `models.registry_tables.RegistryTables` (MLflow's tables)."""

    def exists(self, name: str) -> bool: ...
    def aliases(self, name: str) -> dict[str, str]: ...
    def versions(self, name: str) -> list[Any]: ...
    def version_tags(self, name: str, version: str) -> dict[str, str]: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def tag_version(self, name: str, version: str, tags: dict[str, Any]) -> None: ...


class Registry:
    def __init__(self, tracking_uri: str, create: bool = False) -> None:
        """`create`: may make a new SQLite database (training does, for the first model); everything else
        (serving, promotion, listing) is refused with a clear error when the database is missing, rather than
        working on an empty one made in its place."""
        from mlflow import MlflowClient

        if not create:
            require_database(tracking_uri)

        # the client is bound to this store; MLflow's process-wide URIs are left alone (fluent calls go through
        # `active()`), so creating a registry never redirects another one's fluent calls
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextmanager
    def active(self) -> Iterator[None]:
        """MLflow's fluent APIs (start_run, log_model, load_model of models:/…, download_artifacts) use this registry
        inside the block, whatever other Registry the process created since; the previous URIs come back after."""
        import mlflow

        with _MLFLOW_URIS:
            before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
            _set_mlflow_uris(self.tracking_uri, self.tracking_uri)
            try:
                yield
            finally:
                _set_mlflow_uris(*before)

    def experiment(self, name: str, artifact_root: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
            return True
        except MlflowException:
            return False

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version (read from the registered model: search_model_versions leaves aliases empty)."""
        if not self.exists(name):
            return {}
        return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def versions(self, name: str) -> list[Any]:
        if not self.exists(name):
            return []
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted(found, key=lambda mv: int(mv.version))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        if alias in self.aliases(name):
            self.client.delete_registered_model_alias(name, alias)

    def tag_version(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value)[:5000])

    def describe_version(self, name: str, version: str, description: str) -> None:
        """The version's description in the registry UI (MLflow keeps up to 5,000 characters)."""
        if len(description) > 5000:
            description = description[:4900] + "\n\n… (the whole report: the run's `evaluation/summary.md`)"
        self.client.update_model_version(name, version, description=description)

    def copy_version(self, name: str, version: str) -> str:
        """A new version of `name` with the same model as `version` (its source is a logged model, which MLflow
        resolves through the process-wide URIs); returns the new version number."""
        source = self.client.get_model_version(name, version).source
        if source is None:
            raise ModelNotFound(f"model {name!r} version {version} has no source to copy")
        with self.active():
            return str(self.client.create_model_version(name, source, run_id=None).version)

    def load(self, name: str, ref: str = CHAMPION) -> LoadedModel:
        """A version by alias or number, with its serving artifacts."""
        import mlflow

        if not self.exists(name):
            raise ModelNotFound(f"model {name!r} is not registered")
        aliases = self.aliases(name)
        version = aliases.get(ref, ref)
        if not str(version).isdigit():
            raise ModelNotFound(f"model {name!r} has no alias {ref!r} (aliases: {aliases or 'none'})")
        mv = self.client.get_model_version(name, str(version))
        with self.active():
            booster = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
            serving = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="serving",
                                                               tracking_uri=self.tracking_uri))  # fmt: skip
        from models.card import CARD_FILE, ModelCard

        card_path = serving / CARD_FILE
        if not card_path.exists():
            raise ModelNotFound(f"model {name!r} version {version} has no model card (registered by an older release): "
                                "train a new version")  # fmt: skip
        card = ModelCard.model_validate(json.loads(card_path.read_text()))
        if booster.feature_name() != card.input_names:
            raise ModelNotFound(f"model {name!r} version {version}: its card does not describe its inputs")
        alias = next((a for a, v in aliases.items() if v == str(version)), None)
        return LoadedModel(name, str(version), alias, booster, card, serving)


class AliasError(ValueError):
    pass


def promote(registry: AliasStore, name: str, version: str) -> dict[str, str]:
    """`champion` moves to version; the old champion keeps `previous_champion`; a canary promoted loses `canary`."""
    if not registry.exists(name):
        raise ModelNotFound(f"model {name!r} is not registered")
    known = {str(mv.version) for mv in registry.versions(name)}
    if version not in known:
        raise AliasError(f"model {name!r} has no version {version} (versions: {sorted(known, key=int)})")
    aliases = registry.aliases(name)
    old = aliases.get(CHAMPION)
    if old == version:
        raise AliasError(f"version {version} is already the champion")
    registry.set_alias(name, CHAMPION, version)
    if old is not None:
        registry.set_alias(name, PREVIOUS_CHAMPION, old)
        registry.tag_version(name, version, {"promoted_from": old, "promoted_by": "reranker models promote"})
    if aliases.get(CANARY) == version:
        registry.delete_alias(name, CANARY)
    return registry.aliases(name)


def record_champion_move(registry: AliasStore, name: str, before: str, after: str) -> dict[str, str]:
    """A `champion` moved outside `promote` (the MLflow UI, an MLflow client) is recorded as `promote` records it:
    the old champion keeps `previous_champion` (unless the move was a `rollback`, which tags the version it left),
    a `canary` that now points at the champion is cleared, and the new champion is tagged with how it came. Safe to
    call again (every step checks the registry first)."""
    aliases = registry.aliases(name)
    if aliases.get(CHAMPION) != after or before == after:
        return aliases  # moved again meanwhile, or nothing moved
    left = registry.version_tags(name, before)
    if aliases.get(PREVIOUS_CHAMPION) != before and "rolled_back_reason" not in left:
        registry.set_alias(name, PREVIOUS_CHAMPION, before)
    if aliases.get(CANARY) == after:
        registry.delete_alias(name, CANARY)
    tags = registry.version_tags(name, after)
    if "promoted_from" not in tags:
        registry.tag_version(name, after, {"promoted_from": before, "promoted_by": "outside reranker (MLflow UI or "
                                           "client); recorded by the stage"})  # fmt: skip
    return registry.aliases(name)


def rollback(registry: AliasStore, name: str, reason: str) -> dict[str, str]:
    """`champion` goes back to `previous_champion`; the version rolled back is tagged with the reason."""
    aliases = registry.aliases(name)
    if not aliases and not registry.exists(name):
        raise ModelNotFound(f"model {name!r} is not registered")
    previous = aliases.get(PREVIOUS_CHAMPION)
    if previous is None:
        raise AliasError(f"model {name!r} has no previous_champion to roll back to")
    current = aliases.get(CHAMPION)
    registry.set_alias(name, CHAMPION, previous)
    registry.delete_alias(name, PREVIOUS_CHAMPION)
    if current is not None:
        registry.tag_version(name, current, {"rolled_back_reason": reason})
    return registry.aliases(name)


def reject_canary(registry: AliasStore, name: str, reason: str) -> dict[str, str]:
    """The `canary` alias is removed (serving stops sending it traffic) and the version tagged with the reason."""
    version = registry.aliases(name).get(CANARY)
    if version is None:
        raise AliasError(f"model {name!r} has no canary")
    registry.delete_alias(name, CANARY)
    registry.tag_version(name, version, {"rolled_back_reason": reason})
    return registry.aliases(name)
