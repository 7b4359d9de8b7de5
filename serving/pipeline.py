"""The rerank pipeline: features -> score -> explore -> explain -> respond, with the fallback table.

| situation | what is served |
|---|---|
| unknown or cold-start user (no online features) | the fallback (`served_by: fallback`) |
| user opted out of personalization, or no user_id | the learned model without user features (non-personalized) |
| model_id not registered | `ModelNotFound` (the service answers 404) |
| the model's inputs cannot be supplied by the current features | the version loaded before it, else the fallback (`model_inputs_unavailable`) |
| registry unreachable | the last loaded model, else the fallback |
| online store unreachable | the first-stage order |
| some features missing | the learned model on the ones available (missing = NaN, LightGBM's missing branch) |
| candidate features the feature set does not declare | 422 naming them, or ignored (`unknown_features: ignore`) |
| scoring over the time budget | the candidates in their original order (`served_by: unranked`) |

The fallback is the request's `fallback` (`rule_based`, `first_stage`, or `rerank`: the static BM25 model over the
candidates' content, `models.static_rerank`), else the one the served model's training found best on the same data
(recorded on its card), else - no model served - the caller's own first-stage order.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.inputs import InputPlan, available_inputs, select_inputs
from feature_repo.inputs import warm_up as warm_up_inputs
from feature_repo.rows import apply_overrides, extras
from feature_repo.text import warm_up as warm_up_text
from feature_repo.transforms import normalize_query
from models.ranker import FirstStageRanker, finite_scores
from models.rule_based import RuleBasedRanker
from models.static_rerank import StaticRanker
from reranker.contracts import ServedListEvent
from reranker.exploration import epsilon_greedy_slots
from reranker.exploration import warm_up as warm_up_exploration
from reranker.request_ids import RequestIds
from serving.errors import UnknownFeatures
from serving.explanations import InputLabel, feature_strings, input_labels, top_inputs
from serving.explanations import warm_up as warm_up_explanations
from serving.model_cache import ModelCache, RegistryUnavailable, Variant
from serving.online_features import FeatureState, OnlineFeatures, UserRow
from serving.schemas import (
    Fallback,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ServedBy,
    UnknownFeaturePolicy,
)


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
    context: dict[str, Any] | None = None
    features: list[dict[str, float]] | None = None  # each returned item's request features
    first_stage: list[float | None] | None = (
        None  # each returned item's first-stage score, as the caller sent it
    )

    def event(self) -> ServedListEvent:
        features = self.features or [{}] * len(self.results)
        first = self.first_stage or [None] * len(self.results)
        return ServedListEvent.model_validate({
            "request_id": self.request_id, "user_id": self.user_key, "query": self.query, "model_id": self.model_id,
            "model_version": self.model_version, "variant": self.variant, "served_by": self.served_by,
            "timestamp": self.timestamp, "exploration_rate": self.exploration_rate, "n_candidates": self.n_candidates,
            "context": self.context or None,
            "items": [{"document_id": r.document_id, "position": i, "score": r.score, "propensity": p,
                       "features": f or None, "first_stage_score": fs}
                      for i, (r, p, f, fs) in enumerate(zip(self.results, self.propensities, features, first,
                                                            strict=True))],
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
class Inputs:
    """One request's rows as the input kernel reads them."""

    docs: np.ndarray
    users: np.ndarray
    extras: np.ndarray
    first_stage: np.ndarray
    now_days: np.ndarray

    def compute(self, plan: InputPlan) -> np.ndarray:
        n = len(self.first_stage)
        return plan.compute(self.docs, self.users, self.extras, self.first_stage, np.array([0, n], np.int64),
                            self.now_days)  # fmt: skip


@dataclass
class Scored:
    """A request's candidates scored by the path that serves them, before exploration."""

    user_key: str | None
    now: datetime
    scores: np.ndarray  # finite, one per candidate
    served_by: ServedBy
    reason: list[str]
    codes: list[str]
    variant: Variant | None
    X: np.ndarray | None  # the model's inputs (learned path)
    user: UserRow | None
    state: FeatureState | None
    features: list[dict[str, float]]  # each candidate's request features, as checked


@dataclass
class RerankPipeline:
    features: OnlineFeatures | None
    models: ModelCache
    hash_user: Callable[[str], str]
    opted_out: set[str] = field(default_factory=set)
    budget_ms: float = 50.0
    request_ids: RequestIds | None = None  # signed ids (an interaction must name one served to its user)
    explain_top: int = 3
    explain_threads: int = 2  # for models too deep for the SHAP tables, LightGBM's pred_contrib on both cores
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _rules: dict[str, tuple[RuleBasedRanker, InputPlan]] = field(default_factory=dict, repr=False)
    _input_labels: dict[tuple[int, int], list[InputLabel]] = field(default_factory=dict, repr=False)
    static: StaticRanker = field(default_factory=StaticRanker)

    def __post_init__(self) -> None:
        """Compile the request's kernels now (or load them from numba's cache), not in the first request."""
        warm_up_exploration()
        warm_up_explanations()
        warm_up_inputs()
        warm_up_text()

    def _rule(self, state: FeatureState) -> tuple[RuleBasedRanker, InputPlan]:
        """The rule-based ranker over the current build's inputs (planned once per build)."""
        key = state.manifest.version + str(state.stamp)
        hit = self._rules.get(key)
        if hit is None:
            names = [i.name for i in available_inputs(state.manifest)]
            rule = RuleBasedRanker.for_inputs(names)
            have = {i.name: i for i in available_inputs(state.manifest)}
            hit = self._rules[key] = (
                rule,
                InputPlan.build([have[n] for n in rule.feature_names], state.manifest),
            )
        return hit

    def _check_candidate_features(self, req: RerankRequest, state: FeatureState | None, reason: list[str],
                                  codes: list[str]) -> tuple[list[dict[str, float]], set[str]]:  # fmt: skip
        """The candidates' features, checked against the feature set: unknown names are a 422, or dropped when the
        request says `unknown_features: ignore`; and the names they carry."""
        given = [c.features for c in req.candidates]
        present: set[str] = set()
        for f in given:
            if f:
                present.update(f)
        if state is None or not present:
            return given, present
        allowed = state.manifest.feature_set.overridable()
        unknown = sorted(present - allowed)
        if not unknown:
            return given, present
        if req.unknown_features is UnknownFeaturePolicy.reject:
            first = next(i for i, f in enumerate(given) if set(f) - allowed)
            raise UnknownFeatures(f"candidates[{first}].features",
                                  f"unknown feature names {unknown}: the feature set "
                                  f"{state.manifest.feature_set.name!r} declares request fields "
                                  f"{sorted(state.manifest.feature_set.request)} and numeric document attributes "
                                  f"{sorted(allowed - set(state.manifest.feature_set.request))}; send "
                                  "unknown_features: ignore to drop them instead")  # fmt: skip
        reason.append(f"ignored unknown candidate features {unknown}")
        codes.append("unknown_features_ignored")
        return [{k: v for k, v in f.items() if k in allowed} for f in given], present & allowed

    def _inputs(self, state: FeatureState, req: RerankRequest, features: list[dict[str, float]], user: UserRow | None,
                first_stage: np.ndarray, now: datetime, present: set[str] | None = None) -> Inputs:  # fmt: skip
        manifest = state.manifest
        ids = [c.document_id for c in req.candidates]
        rows = state.documents.rows(ids)
        docs = state.documents.matrix[rows]  # a copy: -1 (unknown) is the NaN row
        if present is None or present:
            apply_overrides(docs, manifest, features, present)
        n = len(ids)
        width = len(manifest.columns[1])
        users = (user.values if user is not None else np.full(width, np.nan))[None, :]
        recent = user.recent if user is not None else np.zeros(0, np.int64)
        query = normalize_query(req.query)
        stats = state.query_stats.lookup(query, rows) if state.query_stats is not None else None
        content = None
        if (
            state.text is not None and (rows < 0).any()
        ):  # documents the catalog lacks: matched by their content
            content = {int(i): state.text.vector(req.candidates[i].content) for i in np.flatnonzero(rows < 0)
                       if req.candidates[i].content}  # fmt: skip
        when = pd.Timestamp(now)
        extra = extras(manifest, state.text, features, [req.context], [when], np.zeros(n, np.int64), rows, [query],
                       neighbours=state.documents.neighbours, recent=(np.array([0, len(recent)]), recent),
                       query_stats=stats, content_vectors=content,
                       query_vectors=[state.query_vector(query)], present=present)  # fmt: skip
        return Inputs(docs, users, extra, first_stage, np.array([now.timestamp() / 86400.0]))

    def score(self, req: RerankRequest, started: float | None = None) -> Scored:
        """The request's candidates scored by the path that serves them (learned, fallback or unranked), before
        exploration: what `rerank` orders, and what a pipeline's `learned_rerank` stage hands to the next stage.
        `started`: when the budget began (`time.perf_counter()`; a pipeline's start, so that one budget covers its
        stages), default now."""
        user_key = self.hash_user(req.user_id) if req.user_id else None
        reason: list[str] = []
        codes: list[str] = []
        choosing = time.perf_counter()
        try:
            variant = self.models.choose(req.model_id, user_key)  # ModelNotFound propagates: 404
            if variant is None:
                refusal = self.models.refusal(req.model_id)
                if refusal is not None:
                    reason.append(refusal.reason)
                    codes.append("model_inputs_unavailable")
                else:
                    reason.append("no champion alias")
                    codes.append("no_champion")
        except RegistryUnavailable as exc:
            variant = None
            reason.append(f"registry unavailable ({exc})")
            codes.append("registry_unavailable")
        # the budget covers features and scoring, not a first model load
        started = time.perf_counter() if started is None else started + (time.perf_counter() - choosing)
        now = datetime.now(UTC)
        state: FeatureState | None = None
        store_ok = True
        try:
            state = self.features.state() if self.features is not None else None
        except Exception as exc:  # the feature build cannot be read: rank on what the request carries
            store_ok = False
            reason.append(f"features unavailable ({type(exc).__name__})")
            codes.append("online_store_unavailable")
        features, present = self._check_candidate_features(req, state, reason, codes)
        mask = None
        if variant is not None and req.features is not None:
            mask, unknown = select_inputs(list(variant.plan.inputs), req.features)
            if unknown:
                raise UnknownFeatures("features", f"unknown feature names for this model: {unknown} (it knows "
                                      f"families {sorted({i.family for i in variant.plan.inputs})}, e.g. "
                                      f"{variant.plan.names[:5]})")  # fmt: skip
        personalize = user_key is not None and user_key not in self.opted_out
        n = len(req.candidates)
        first_stage = np.array([np.nan if c.score is None else c.score for c in req.candidates], dtype=float)
        user: UserRow | None = None
        inputs: Inputs | None = None
        if state is not None and store_ok:
            try:
                if personalize and user_key is not None and self.features is not None:
                    user = self.features.user(user_key)
                inputs = self._inputs(state, req, features, user, first_stage, now, present)
            except Exception as exc:  # the online store is down
                store_ok = False
                reason.append(f"online store unavailable ({type(exc).__name__})")
                codes.append("online_store_unavailable")
        learned = variant is not None and inputs is not None and (user is not None or not personalize)
        if variant is not None and inputs is not None and personalize and user is None:
            reason.append("unknown or cold-start user")
            codes.append("cold_start_user")
        if user_key is not None and user_key in self.opted_out:
            reason.append("user opted out: non-personalized")
            codes.append("opted_out")
        X = None
        if learned:
            assert variant is not None and inputs is not None
            X = inputs.compute(variant.plan)
            if mask is not None:  # only the requested features: the others count as missing
                X[:, ~mask] = np.nan
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
            choice = req.fallback or (Fallback(variant.model.card.fallback) if variant is not None else
                                      Fallback.first_stage)  # fmt: skip
            if choice is Fallback.rerank:
                scores = self.static.score_request(
                    req.query, [c.content for c in req.candidates], first_stage
                )
            elif choice is Fallback.rule_based and inputs is not None and state is not None:
                rule, plan = self._rule(state)
                scores = rule.score_matrix(inputs.compute(plan))
            else:
                if choice is Fallback.rule_based:
                    reason.append("rule-based fallback needs the online store: first-stage order")
                scores = FirstStageRanker().score_matrix(first_stage[:, None])
            served_by = ServedBy.fallback
        return Scored(
            user_key, now, finite_scores(scores), served_by, reason, codes, variant, X, user, state, features
        )

    def rerank(self, req: RerankRequest) -> tuple[RerankResponse, ServedList]:
        scored = self.score(req)
        n = len(req.candidates)
        k = min(req.top_n, n)
        eps = req.exploration_rate if scored.served_by is not ServedBy.unranked else 0.0
        if eps > 0:
            slots, propensity = epsilon_greedy_slots(scored.scores[None, :], k, eps, self._rng())
            order, prop = slots[0], propensity[0]
        else:
            order, prop = np.argsort(-scored.scores, kind="stable")[:k], np.ones(k)
        return self.respond(req, scored, order, prop, eps, req.model_id)

    def respond(self, req: RerankRequest, scored: Scored, order: np.ndarray, prop: np.ndarray, eps: float,
                model_id: str, boost: list[float] | None = None, extra: list[dict[str, Any]] | None = None,
                response_type: type[RerankResponse] = RerankResponse,
                top: dict[str, Any] | None = None) -> tuple[RerankResponse, ServedList]:  # fmt: skip
        """The response and the served list for `order` (rows of `req.candidates`) shown with propensities `prop`:
        each item explained. `boost`: ranks each moved up by exploration (default: against the scores' order);
        `extra`: more fields of each result, `top`: of the response (a pipeline's)."""
        request_id = (
            self.request_ids.issue(scored.user_key or "")
            if self.request_ids is not None
            else uuid.uuid4().hex
        )
        scores, served_by, variant, user, X = (
            scored.scores,
            scored.served_by,
            scored.variant,
            scored.user,
            scored.X,
        )
        k = len(order)
        if boost is None:
            rank_of = np.empty(len(scores), dtype=int)
            rank_of[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
            boost = np.maximum(rank_of[order] - np.arange(k), 0).astype(float).tolist()
        top_features: list[list[str]] = [[] for _ in range(k)]
        contributions: list[list[dict[str, object]]] = [[] for _ in range(k)]
        personal = [0.0] * k
        if served_by is ServedBy.learned and variant is not None and X is not None and k:
            contribs = self._explain(variant, X, order)
            personal, index, values = top_inputs(
                contribs, variant.plan.personal, user is not None, self.explain_top
            )
            top_features, contributions = feature_strings(X[order], index, values, variant.plan.names,
                                                          self._labels(variant, scored.state))  # fmt: skip
        segment_id = None if user is None else user.segment
        segment = None
        if segment_id is not None:
            names = scored.state.manifest.segment_names if scored.state is not None else []
            segment = names[segment_id] if 0 <= segment_id < len(names) else f"segment_{segment_id}"
        shown = scores[order].tolist()
        variant_name = (
            variant.name if (variant is not None and served_by is ServedBy.learned) else served_by.value
        )
        version = variant.model.version if variant is not None and served_by is ServedBy.learned else None
        # validated from plain values in one pass of pydantic-core (3x faster than constructing the models in Python)
        response = response_type.model_validate({
            **(top or {}), "request_id": request_id, "model_id": model_id, "model_version": version, "variant": variant_name,
            "served_by": served_by, "reason": "; ".join(scored.reason) or "ok", "reason_codes": scored.codes,
            "results": [{"document_id": req.candidates[idx].document_id, "content": req.candidates[idx].content,
                         "score": shown[pos],
                         "learned_rerank": {"personalization_score": personal[pos], "exploration_boost": boost[pos],
                                            "user_segment": segment, "user_segment_id": segment_id,
                                            "top_features": top_features[pos],
                                            "top_feature_contributions": contributions[pos]},
                         **(extra[pos] if extra is not None else {})}
                        for pos, idx in enumerate(order.tolist())],
        })  # fmt: skip
        served = ServedList(request_id, scored.user_key or "anonymous", req.query, model_id, version, variant_name,
                            served_by.value, scored.now, eps, len(req.candidates), response.results, prop.tolist(),
                            req.context or None, [scored.features[i] for i in order.tolist()],
                            [req.candidates[i].score for i in order.tolist()])  # fmt: skip
        return response, served

    def _labels(self, variant: Variant, state: FeatureState | None) -> list[InputLabel]:
        """How the variant's inputs read in `top_features`, per model and feature build."""
        assert state is not None  # the learned path reads the feature build
        key = (id(variant.plan), id(state.manifest))
        hit = self._input_labels.get(key)
        if hit is None:
            if len(self._input_labels) > 64:
                self._input_labels.clear()
            hit = self._input_labels[key] = input_labels(variant.plan.inputs, state.manifest.feature_set,
                                                         state.manifest.encodings)  # fmt: skip
        return hit

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
