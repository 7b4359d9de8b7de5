"""The rerank pipeline: features -> score -> explore -> explain -> respond, with the fallback table.

| situation | what is served |
|---|---|
| unknown or cold-start user (no online features) | the requested fallback ranker (`served_by: fallback`) |
| user opted out of personalization, or no user_id | the learned model without user features (non-personalized) |
| model_id not registered | `ModelNotFound` (the service answers 404) |
| registry unreachable | the last loaded model, else the fallback |
| online store unreachable | the fallback ranker on the features the request carries |
| some features missing | the learned model on the ones available (missing = NaN, LightGBM's missing branch) |
| scoring over the time budget | the candidates in their original order (`served_by: unranked`) |
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from models.ranker import FirstStageRanker, Ranker
from models.rule_based import RuleBasedRanker
from reranker.contracts import ServedListEvent
from reranker.exploration import epsilon_greedy_slots
from reranker.exploration import warm_up as warm_up_exploration
from serving.explanations import summarize
from serving.explanations import warm_up as warm_up_explanations
from serving.fast_inputs import assemble
from serving.fast_inputs import warm_up as warm_up_inputs
from serving.model_cache import ModelCache, RegistryUnavailable, Variant
from serving.online_features import DOC_FEATURES, USER_FEATURES, OnlineFeatures
from serving.schemas import (
    Fallback,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ServedBy,
)

FALLBACKS: dict[Fallback, Ranker] = {
    Fallback.rule_based: RuleBasedRanker(),
    Fallback.first_stage: FirstStageRanker(),
}


class UnknownFeatures(ValueError):
    pass


@dataclass(frozen=True)
class ServedList:
    """What was served, as plain values: made into its `ServedListEvent` (validated) off the request path."""

    request_id: str
    user_key: str  # hashed, or "anonymous"
    query: str | None
    model_id: str
    model_version: str | None
    variant: str
    served_by: str
    timestamp: datetime
    exploration_rate: float
    n_candidates: int
    results: list[RerankResult]
    propensities: list[float]

    def event(self) -> ServedListEvent:
        return ServedListEvent.model_validate({
            "request_id": self.request_id, "user_id": self.user_key, "query": self.query, "model_id": self.model_id,
            "model_version": self.model_version, "variant": self.variant, "served_by": self.served_by,
            "timestamp": self.timestamp, "exploration_rate": self.exploration_rate, "n_candidates": self.n_candidates,
            "items": [{"document_id": r.document_id, "position": i, "score": r.score, "propensity": p}
                      for i, (r, p) in enumerate(zip(self.results, self.propensities, strict=True))],
        })  # fmt: skip


def score_by_deadline(
    score: Callable[[np.ndarray], np.ndarray], X: np.ndarray, deadline: float, block: int = 256
) -> np.ndarray | None:
    """Scores of X's rows, or None when the `time.perf_counter()` deadline passes first. Computed on the calling
    thread in blocks of `block` rows, the clock read before each block: an answer is at most one block late (a
    fraction of a millisecond here), and no CPU goes on scores nobody waits for - a worker thread that timed out
    would keep scoring, and handing work to it cost ≈ 0.25 ms a request."""
    out = np.empty(len(X))
    for start in range(0, len(X), block):
        if time.perf_counter() > deadline:
            return None
        out[start : start + block] = score(X[start : start + block])
    return out


@dataclass
class RerankPipeline:
    features: OnlineFeatures | None
    models: ModelCache
    hash_user: Callable[[str], str]
    opted_out: set[str] = field(default_factory=set)
    budget_ms: float = 50.0
    explain_top: int = 3
    explain_threads: int = 2  # for models too deep for the SHAP tables, LightGBM's pred_contrib on both cores
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        """Compile the request's kernels now (or load them from numba's cache), not in the first request."""
        warm_up_inputs()
        warm_up_exploration()
        warm_up_explanations()

    def rerank(self, req: RerankRequest) -> tuple[RerankResponse, ServedList]:
        request_id = uuid.uuid4().hex
        user_key = self.hash_user(req.user_id) if req.user_id else None
        reason: list[str] = []
        codes: list[str] = []
        try:
            variant = self.models.choose(req.model_id, user_key)  # ModelNotFound propagates: 404
            if variant is None:
                reason.append("no champion alias")
                codes.append("no_champion")
        except RegistryUnavailable as exc:
            variant = None
            reason.append(f"registry unavailable ({exc})")
            codes.append("registry_unavailable")
        started = time.perf_counter()  # the budget covers features and scoring, not a first model load
        if variant is not None and req.features is not None:
            unknown = sorted(set(req.features) - set(variant.ranker.feature_names))
            if unknown:
                raise UnknownFeatures(f"unknown feature names for this model: {unknown}")
        personalize = user_key is not None and user_key not in self.opted_out
        user, docs, store_ok = None, None, True
        try:
            if self.features is not None:
                docs = self.features.documents().rows([c.document_id for c in req.candidates])
                if personalize and user_key is not None:
                    user = self.features.user(user_key)
        except Exception as exc:  # the online store is down: rank on what the request carries
            store_ok = False
            reason.append(f"online store unavailable ({type(exc).__name__})")
            codes.append("online_store_unavailable")
        n = len(req.candidates)
        user_vec = (
            None if user is None else np.array([user.get(f, np.nan) for f in USER_FEATURES], dtype=float)
        )
        docs = docs if docs is not None else np.full((n, len(DOC_FEATURES)), np.nan)
        first_stage = np.array([np.nan if c.score is None else c.score for c in req.candidates], dtype=float)
        overrides = [c.features for c in req.candidates]
        now_days = time.time() / 86400.0

        def inputs(names: list[str]) -> np.ndarray:
            return assemble(docs, user_vec, first_stage, overrides, now_days, names)

        learned = variant is not None and store_ok and (user is not None or not personalize)
        if variant is not None and store_ok and personalize and user is None:
            reason.append("unknown or cold-start user")
            codes.append("cold_start_user")
        if user_key is not None and user_key in self.opted_out:
            reason.append("user opted out: non-personalized")
            codes.append("opted_out")
        if learned:
            assert variant is not None
            names = variant.ranker.feature_names
            X = inputs(names)
            if req.features is not None:  # only the requested features: the others count as missing
                X[:, [j for j, f in enumerate(names) if f not in set(req.features)]] = np.nan
            learned_scores = score_by_deadline(
                variant.ranker.score_matrix, X, started + self.budget_ms / 1000
            )
            if learned_scores is not None:
                scores = learned_scores
                served_by = ServedBy.learned
            else:
                scores = -np.arange(n, dtype=float)
                served_by = ServedBy.unranked
                reason.append(f"scoring exceeded the {self.budget_ms:.0f} ms budget")
                codes.append("over_budget")
        else:
            fallback = FALLBACKS[req.fallback]
            scores = fallback.score_matrix(inputs(fallback.feature_names))
            served_by = ServedBy.fallback
        deterministic = np.argsort(-scores, kind="stable")
        k = min(req.top_n, n)
        eps = req.exploration_rate if served_by is not ServedBy.unranked else 0.0
        if eps > 0:
            slots, propensity = epsilon_greedy_slots(scores[None, :], k, eps, self._rng())
            order, prop = slots[0], propensity[0]
        else:
            order, prop = deterministic[:k], np.ones(k)
        rank_of = np.empty(n, dtype=int)
        rank_of[deterministic] = np.arange(n)
        contribs = self._explain(variant, X, order) if served_by is ServedBy.learned and variant else None
        segment = (
            None if user is None or np.isnan(user.get("user_segment", np.nan)) else int(user["user_segment"])
        )
        top_features: list[list[dict[str, object]]] = [[] for _ in range(k)]
        personal = [0.0] * k
        if contribs is not None and variant is not None:
            personal, top_features = summarize(contribs, variant.ranker.feature_names, user is not None,
                                               self.explain_top)  # fmt: skip
        shown = scores[order].tolist()
        boost = np.maximum(rank_of[order] - np.arange(k), 0).astype(float).tolist()
        variant_name = (
            variant.name if (variant is not None and served_by is ServedBy.learned) else served_by.value
        )
        version = variant.model.version if variant is not None and served_by is ServedBy.learned else None
        # validated from plain values in one pass of pydantic-core (3x faster than constructing the models in Python)
        response = RerankResponse.model_validate({
            "request_id": request_id, "model_id": req.model_id, "model_version": version, "variant": variant_name,
            "served_by": served_by, "reason": "; ".join(reason) or "ok", "reason_codes": codes,
            "results": [{"document_id": req.candidates[idx].document_id, "content": req.candidates[idx].content,
                         "score": shown[pos],
                         "learned_rerank": {"personalization_score": personal[pos], "exploration_boost": boost[pos],
                                            "user_segment": segment, "top_features": top_features[pos]}}
                        for pos, idx in enumerate(order.tolist())],
        })  # fmt: skip
        served = ServedList(request_id, user_key or "anonymous", req.query, req.model_id, version, variant_name,
                            served_by.value, datetime.now(UTC), eps, n, response.results, prop.tolist())  # fmt: skip
        return response, served

    def _rng(self) -> np.random.Generator:
        """This thread's generator: a Generator is not safe to share between threads, and a new one per request
        costs 10 us of OS entropy."""
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = np.random.default_rng()
        return rng

    def _explain(self, variant: Variant, X: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Exact per-row SHAP contributions for the returned rows only: (rows x features), the columns in
        `feature_names` order (the expected-value column dropped). Rows are cast to float32, as for scoring."""
        rows = np.ascontiguousarray(X[order], dtype=np.float32)
        return variant.ranker.contributions(rows, threads=self.explain_threads)[:, :-1]
