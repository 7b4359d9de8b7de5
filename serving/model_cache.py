"""Loaded models per model_id, following MLflow aliases without a restart.

`champion` serves; a `canary` alias, when present, gets a configured share of users, chosen deterministically from
the hashed user id. A background poll re-reads the aliases every few seconds and swaps in the versions they point
at; while the registry is unreachable the last loaded models keep serving.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from models.lambdarank import LambdaRankRanker
from models.registry import CANARY, CHAMPION, LoadedModel, ModelNotFound, Registry

log = logging.getLogger("reranker.serving")


class RegistryUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str  # champion | canary
    model: LoadedModel
    ranker: LambdaRankRanker


def bucket(user_key: str) -> float:
    """A stable number in [0, 1) per user: the same user always lands in the same variant."""
    return int(hashlib.sha256(user_key.encode()).hexdigest()[:8], 16) / 2**32


class ModelCache:
    def __init__(self, registry: Callable[[], Registry], canary_share: float = 0.2, poll_seconds: float = 10.0,
                 threads: int = 1) -> None:  # fmt: skip
        self._registry_factory = registry
        self._registry: Registry | None = None
        self.canary_share = canary_share
        self.poll_seconds = poll_seconds
        self.threads = threads
        self._variants: dict[str, dict[str, Variant]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def registry(self) -> Registry:
        if self._registry is None:
            try:
                self._registry = self._registry_factory()
            except Exception as exc:
                raise RegistryUnavailable(str(exc)) from exc
        return self._registry

    def _load(self, model_id: str) -> dict[str, Variant]:
        try:
            registry = self.registry()
            if not registry.exists(model_id):
                raise ModelNotFound(f"model {model_id!r} is not registered")
            aliases = registry.aliases(model_id)
            current = self._variants.get(model_id, {})
            loaded: dict[str, Variant] = {}
            for name in (CHAMPION, CANARY):
                version = aliases.get(name)
                if version is None:
                    continue
                have = current.get(name)
                if have is not None and have.model.version == version:
                    loaded[name] = have
                    continue
                model = registry.load(model_id, version)
                ranker = LambdaRankRanker(model.booster, threads=self.threads)
                ranker.warm_up()  # tables built and kernels compiled here, off the request path
                loaded[name] = Variant(name, model, ranker)
                log.info("model %s: %s -> version %s", model_id, name, version)
            return loaded
        except ModelNotFound:
            raise
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc}") from exc

    def variants(self, model_id: str) -> dict[str, Variant]:
        """Loaded variants of a model (loading them on first use)."""
        with self._lock:
            if model_id in self._variants:
                return self._variants[model_id]
        loaded = self._load(model_id)
        with self._lock:
            self._variants[model_id] = loaded
        return loaded

    def is_loaded(self, model_id: str) -> bool:
        """Whether a request for this model is served from memory (no registry call)."""
        with self._lock:
            return model_id in self._variants

    def choose(self, model_id: str, user_key: str | None) -> Variant | None:
        variants = self.variants(model_id)
        canary = variants.get(CANARY)
        if canary is not None and user_key is not None and bucket(user_key) < self.canary_share:
            return canary
        return variants.get(CHAMPION)

    def refresh(self) -> None:
        """Re-read the aliases of every model in use; keep the last loaded ones when the registry fails."""
        for model_id in list(self._variants):
            try:
                loaded = self._load(model_id)
            except (RegistryUnavailable, ModelNotFound) as exc:
                log.warning("alias refresh of %s failed, keeping loaded versions: %s", model_id, exc)
                continue
            with self._lock:
                self._variants[model_id] = loaded

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="alias-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()
