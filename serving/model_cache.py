"""Loaded models per model_id, following MLflow aliases without a restart.

`champion` serves; a `canary` alias, when present, gets a configured share of users, chosen deterministically from
the hashed user id. A background poll re-reads the aliases every few seconds and swaps in the versions they point
at; while the registry is unreachable the last loaded models keep serving.

Each loaded version carries its input plan: the card's inputs over the current feature build
(`feature_repo.inputs.InputPlan`). A version whose inputs the current features cannot supply is refused - logged,
counted (`refusals`), the reason kept for the responses - and the version loaded before it keeps serving; with none,
requests get the fallback with reason code `model_inputs_unavailable`. A new feature build re-plans every loaded
version the same way (`replan`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from feature_repo.inputs import InputPlan, InputsUnavailable
from feature_repo.manifest import FeatureManifest
from models.lambdarank import LambdaRankRanker
from models.registry import CANARY, CHAMPION, LoadedModel, ModelNotFound, Registry, record_champion_move

log = logging.getLogger("reranker.serving")


class RegistryUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str  # champion | canary
    model: LoadedModel
    ranker: LambdaRankRanker
    plan: InputPlan


@dataclass
class Refusal:
    version: str
    alias: str
    reason: str


@dataclass
class ModelState:
    variants: dict[str, Variant] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)  # alias -> why its version is not served


def bucket(user_key: str) -> float:
    """A stable number in [0, 1) per user: the same user always lands in the same variant."""
    return int(hashlib.sha256(user_key.encode()).hexdigest()[:8], 16) / 2**32


class ModelCache:
    def __init__(self, registry: Callable[[], Registry], manifest: Callable[[], FeatureManifest],
                 canary_share: float = 0.2, poll_seconds: float = 10.0, threads: int = 1,
                 on_refusal: Callable[[str, Refusal], None] = lambda model_id, refusal: None) -> None:  # fmt: skip
        self._registry_factory = registry
        self._registry: Registry | None = None
        self._manifest = manifest
        self.canary_share = canary_share
        self.poll_seconds = poll_seconds
        self.threads = threads
        self.on_refusal = on_refusal
        self._states: dict[str, ModelState] = {}
        self._missing: dict[str, float] = {}  # model ids found unregistered, and when
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tasks: list[Callable[[], object]] = []  # run by the watcher thread before each alias poll

    def registry(self) -> Registry:
        if self._registry is None:
            try:
                self._registry = self._registry_factory()
            except Exception as exc:
                raise RegistryUnavailable(str(exc)) from exc
        return self._registry

    def _plan(self, model: LoadedModel) -> InputPlan:
        return InputPlan.build(model.card.inputs, self._manifest(), model.card.encodings)

    def _load(self, model_id: str) -> ModelState:
        try:
            registry = self.registry()
            if not registry.exists(model_id):
                raise ModelNotFound(f"model {model_id!r} is not registered")
            aliases = registry.aliases(model_id)
            current = self._states.get(model_id, ModelState())
            state = ModelState()
            for name in (CHAMPION, CANARY):
                version = aliases.get(name)
                if version is None:
                    continue
                have = current.variants.get(name)
                if have is not None and have.model.version == version:
                    state.variants[name] = have
                    continue
                refused = current.refused.get(name)
                if refused is not None and refused.version == version:  # refused before: not loaded again
                    state.refused[name] = refused
                    if have is not None:
                        state.variants[name] = have
                    continue
                model = registry.load(model_id, version)
                try:
                    plan = self._plan(model)
                except InputsUnavailable as exc:
                    refusal = Refusal(version, name, f"version {version} needs inputs the current features cannot "
                                                     f"supply: {exc}")  # fmt: skip
                    state.refused[name] = refusal
                    log.error("model %s: refusing %s version %s, %s", model_id, name, version, refusal.reason)
                    self.on_refusal(model_id, refusal)
                    if have is not None:  # the version loaded before keeps serving
                        state.variants[name] = have
                    continue
                ranker = LambdaRankRanker(model.booster, threads=self.threads)
                ranker.warm_up()  # tables built and kernels compiled here, off the request path
                state.variants[name] = Variant(name, model, ranker, plan)
                log.info("model %s: %s -> version %s", model_id, name, version)
            return state
        except ModelNotFound:
            raise
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc}") from exc

    def state(self, model_id: str) -> ModelState:
        """Loaded variants of a model (loading them on first use). A model id found missing is answered from
        memory until the next alias poll: a flood of unknown ids costs no registry calls."""
        with self._lock:
            if model_id in self._states:
                return self._states[model_id]
            missing_since = self._missing.get(model_id)
        if missing_since is not None and time.monotonic() - missing_since < self.poll_seconds:
            raise ModelNotFound(f"model {model_id!r} is not registered")
        try:
            loaded = self._load(model_id)
        except ModelNotFound:
            with self._lock:
                if len(self._missing) >= 10_000:
                    self._missing.clear()
                self._missing[model_id] = time.monotonic()
            raise
        with self._lock:
            self._states[model_id] = loaded
        return loaded

    def variants(self, model_id: str) -> dict[str, Variant]:
        return self.state(model_id).variants

    def is_loaded(self, model_id: str) -> bool:
        """Whether a request for this model is served from memory (no registry call)."""
        with self._lock:
            return model_id in self._states

    def choose(self, model_id: str, user_key: str | None) -> Variant | None:
        variants = self.variants(model_id)
        canary = variants.get(CANARY)
        if canary is not None and user_key is not None and bucket(user_key) < self.canary_share:
            return canary
        return variants.get(CHAMPION)

    def refusal(self, model_id: str) -> Refusal | None:
        with self._lock:
            state = self._states.get(model_id)
        return None if state is None else state.refused.get(CHAMPION)

    def replan(self) -> None:
        """After a new feature build: every loaded version's plan over it; a version it cannot supply is refused
        (its variant removed, the refusal kept)."""
        with self._lock:
            states = dict(self._states)
        for model_id, state in states.items():
            fresh = ModelState(refused=dict(state.refused))
            for name, variant in state.variants.items():
                try:
                    fresh.variants[name] = Variant(
                        name, variant.model, variant.ranker, self._plan(variant.model)
                    )
                except InputsUnavailable as exc:
                    refusal = Refusal(variant.model.version, name, f"version {variant.model.version} needs inputs "
                                      f"the new features cannot supply: {exc}")  # fmt: skip
                    fresh.refused[name] = refusal
                    log.error(
                        "model %s: refusing %s after a feature rebuild: %s", model_id, name, refusal.reason
                    )
                    self.on_refusal(model_id, refusal)
            with self._lock:
                self._states[model_id] = fresh

    def refresh(self) -> None:
        """Re-read the aliases of every model in use; keep the last loaded ones when the registry fails."""
        for model_id in list(self._states):
            try:
                loaded = self._load(model_id)
            except (RegistryUnavailable, ModelNotFound) as exc:
                log.warning("alias refresh of %s failed, keeping loaded versions: %s", model_id, exc)
                self._registry = None  # reconnect at the next poll (a database restored in its place)
                continue
            with self._lock:
                current = self._states.get(model_id)
            self._record_move(model_id, current, loaded)
            if current is not None and current.variants and not loaded.variants and not loaded.refused:
                log.warning("registry answered no aliases for %s: keeping the loaded versions %s", model_id,
                            {n: v.model.version for n, v in current.variants.items()})  # fmt: skip
                continue
            with self._lock:
                self._states[model_id] = loaded

    def _record_move(self, model_id: str, current: ModelState | None, loaded: ModelState) -> None:
        """A champion that moved since the last poll, whoever moved it, is recorded as a promote records it."""
        before = current.variants.get(CHAMPION) if current is not None else None
        after = loaded.variants.get(CHAMPION)
        if before is None or after is None or before.model.version == after.model.version:
            return
        try:
            aliases = record_champion_move(
                self.registry(), model_id, before.model.version, after.model.version
            )
            log.info("model %s: champion moved %s -> %s; aliases now %s", model_id, before.model.version,
                     after.model.version, aliases)  # fmt: skip
        except Exception as exc:  # recording is best effort: serving follows the alias either way
            log.warning("model %s: could not record the champion move: %r", model_id, exc)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="alias-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for task in self.tasks:
                try:
                    task()
                except Exception:
                    log.exception("watcher task failed")
            self.refresh()
