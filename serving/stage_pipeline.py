"""POST /pipeline: the seed's stages over the candidates the caller sends, in order, in process.

Retrieval is the caller's (a `semantic_search` / `hybrid_search` stage stands for the candidates sent). Filter and
sort stages run in the order given; `business_rules` apply after the last sort stage, then the slots are filled
with the learned stage's exploration (`models.slate.fill_slots`: pins and caps hold under exploration, and the logged
propensities are those of what was served). The learned stage is `RerankPipeline.score` - the same path, fallbacks
and time budget as POST /rerank - and its explanations come with each result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from models.conditions import Condition
from models.diversity import attribute_similarity, cosine_similarity, mmr_order
from models.pipeline_spec import (
    BusinessRules,
    LearnedRerankParams,
    Mmr,
    Retrieval,
    Stage,
    StageError,
    StaticRerank,
    resolve,
)
from models.ranker import FirstStageRanker
from models.slate import Cap, fill_slots
from models.static_rerank import StaticRanker
from serving.errors import FieldError
from serving.model_cache import RegistryUnavailable
from serving.online_features import FeatureState
from serving.pipeline import RerankPipeline, Scored, ServedList, _finite
from serving.schemas import (
    Candidate,
    PipelineCandidate,
    PipelineRequest,
    PipelineResponse,
    RerankRequest,
    RuleEffect,
    ServedBy,
    StageReport,
)


class CandidateFields:
    """A condition's fields over the request's candidates: their own fields, `features.*`, and `metadata.*` from
    what they sent, else the catalog's stored attributes."""

    def __init__(self, candidates: Sequence[PipelineCandidate], state: FeatureState | None) -> None:
        self.candidates = candidates
        self.state = state
        self._rows: np.ndarray | None = None
        self._cache: dict[str, list[Any]] = {}

    def rows(self) -> np.ndarray:
        if self._rows is None:
            ids = [c.document_id for c in self.candidates]
            self._rows = self.state.documents.rows(ids) if self.state is not None else np.full(len(ids), -1)
        return self._rows

    def values(self, field: str) -> list[Any]:
        hit = self._cache.get(field)
        if hit is not None:
            return hit
        cands = self.candidates
        if field in ("document_id", "content", "score"):
            out = [getattr(c, field) for c in cands]
        else:
            head, name = field.split(".", 1)
            if head == "features":
                out = [c.features.get(name) for c in cands]
            else:
                sent = [c.metadata.get(name) for c in cands]
                if any(name not in c.metadata for c in cands) and self.state is not None:
                    stored = self.state.documents.attribute(name, self.rows())
                    out = [
                        s if name in c.metadata else v for c, s, v in zip(cands, sent, stored, strict=True)
                    ]
                else:
                    out = sent
        self._cache[field] = out
        return out


@dataclass
class Subset:
    """Some of the candidates, as a `FieldSource` for conditions."""

    fields: CandidateFields
    index: np.ndarray

    def values(self, field: str) -> list[Any]:
        column = self.fields.values(field)
        return [column[i] for i in self.index.tolist()]


@dataclass
class Run:
    """One pipeline request as it goes through the stages."""

    req: PipelineRequest
    fields: CandidateFields
    order: np.ndarray  # the candidates still in, best first (indexes into req.candidates)
    scores: np.ndarray  # each candidate's score from the last sort stage (first-stage score before any)
    reports: list[StageReport] = field(default_factory=list)
    learned: tuple[LearnedRerankParams, RerankRequest, Scored, np.ndarray] | None = (
        None  # params, sub-request,
    )
    # its scoring, and the sub-request's candidates as indexes of req.candidates
    rules: list[tuple[Stage, BusinessRules]] = field(default_factory=list)
    top_n: int | None = None
    texts: Any = None


@dataclass
class PipelineRunner:
    stage: RerankPipeline
    static: StaticRanker = field(default_factory=StaticRanker)

    def run(self, req: PipelineRequest) -> tuple[PipelineResponse, ServedList]:
        stages = resolve(req.stages, dict(req.inputs))
        state = None
        if self.stage.features is not None:
            try:
                state = self.stage.features.state()
            except Exception:  # the catalog cannot be read: filters see only what the candidates carry
                state = None
        first = np.array([np.nan if c.score is None else c.score for c in req.candidates], dtype=float)
        base = _finite(FirstStageRanker().score_matrix(first[:, None]))
        run = Run(req, CandidateFields(req.candidates, state), np.argsort(-base, kind="stable"), base)
        for stage in stages:
            started = time.perf_counter()
            before = len(run.order)
            if before:
                detail = getattr(self, f"_{stage.stage_id}")(run, stage)
            else:
                detail = "no candidates left"
                if isinstance(stage.params, LearnedRerankParams):  # an unknown model is still a 404
                    with contextlib.suppress(RegistryUnavailable):
                        self.stage.models.choose(stage.params.model_id, None)
            run.reports.append(StageReport(stage_id=stage.stage_id, stage_name=stage.label, candidates_in=before,
                                           candidates_out=len(run.order), detail=detail or "",
                                           ms=round((time.perf_counter() - started) * 1000, 3)))  # fmt: skip
        return self._finish(run)

    # ------------------------------------------------------------------ stages

    def _semantic_search(self, run: Run, stage: Stage) -> str:
        params: Retrieval = stage.params
        if params.top_k is not None:
            run.order = run.order[: params.top_k]
        return "retrieval is the caller's: the candidates sent, in first-stage order"

    _hybrid_search = _semantic_search

    def _structured_filter(self, run: Run, stage: Stage) -> str:
        keep = np.array(stage.conditions[""].evaluate(Subset(run.fields, run.order)), dtype=bool)
        run.order = run.order[keep] if len(keep) else run.order
        return f"{int((~keep).sum())} filtered out"

    def _rerank(self, run: Run, stage: Stage) -> str:
        params: StaticRerank = stage.params
        ranker = self.static if params.model == self.static.model else StaticRanker(model=params.model)
        idx = run.order
        first = np.array(
            [np.nan if s is None else s for s in Subset(run.fields, idx).values("score")], dtype=float
        )
        scores = ranker.score_request(params.query, Subset(run.fields, idx).values("content"), first)
        run.scores = run.scores.copy()
        run.scores[idx] = scores
        run.order = idx[np.argsort(-scores, kind="stable")]
        keep = params.top_n or params.top_k
        if keep is not None:
            run.order = run.order[:keep]
            run.top_n = keep
        return f"{params.model} over the candidates' content" + (
            "" if params.query else " (no query: first-stage order)"
        )

    def _learned_rerank(self, run: Run, stage: Stage) -> str:
        params: LearnedRerankParams = stage.params
        idx = run.order
        try:
            sub = RerankRequest.model_validate({
                "model_id": params.model_id, "user_id": params.user_id, "query": params.query,
                "candidates": [Candidate.model_construct(**run.req.candidates[i].model_dump(exclude={"metadata"}))
                               for i in idx.tolist()],
                "features": params.features, "context": params.context, "top_n": params.top_n,
                "exploration_rate": params.exploration_rate, "fallback": params.fallback,
                "unknown_features": params.unknown_features})  # fmt: skip
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in error["loc"])
            raise StageError(f"stages[{stage.index}].parameters.{loc}", error["msg"]) from None
        try:
            scored = self.stage.score(sub)
        except FieldError as exc:  # the sub-request's candidates are the pipeline's, in this order
            raise type(exc)(_outer_field(exc.field, stage.index, idx), str(exc)) from exc
        run.scores = run.scores.copy()
        run.scores[idx] = scored.scores
        run.order = idx[np.argsort(-scored.scores, kind="stable")][: params.top_n]
        run.top_n = params.top_n
        run.learned = (params, sub, scored, idx)
        return f"served_by {scored.served_by.value}" + (
            f" ({'; '.join(scored.reason)})" if scored.reason else ""
        )

    def _mmr(self, run: Run, stage: Stage) -> str:
        params: Mmr = stage.params
        idx = run.order
        if params.vector == "text":
            from sklearn.feature_extraction.text import TfidfVectorizer

            texts = [run.req.candidates[i].content or "" for i in idx.tolist()]
            try:
                sim = cosine_similarity(TfidfVectorizer().fit_transform(texts).toarray())
            except ValueError:  # no words at all
                sim = np.eye(len(idx))
            used = "the candidates' text"
        else:
            fields = params.fields or (
                [params.diversity_field] if params.diversity_field else self._categorical(run)
            )
            sim = (
                attribute_similarity([Subset(run.fields, idx).values(f) for f in fields])
                if fields
                else np.eye(len(idx))
            )
            used = ", ".join(fields) or "nothing (no categorical attribute)"
        keep = params.top_n or params.top_k
        run.order = idx[mmr_order(run.scores[idx], sim, params.lambda_, keep)]
        if keep is not None:
            run.top_n = keep
        return f"lambda {params.lambda_} over {used}"

    def _business_rules(self, run: Run, stage: Stage) -> str:
        run.rules.append((stage, stage.params))
        return "applied after the last sort stage, before exploration"

    def _categorical(self, run: Run) -> list[str]:
        state = run.fields.state
        if state is None:
            return sorted(
                {k for c in run.req.candidates for k, v in c.metadata.items() if isinstance(v, str | list)}
            )
        from reranker.featureset import DocumentKind

        return [f"metadata.{n}" for n, a in state.manifest.feature_set.documents.items()
                if a.kind in (DocumentKind.categorical, DocumentKind.multi_categorical)]  # fmt: skip

    # ------------------------------------------------------------------ rules, slots, response

    def _finish(self, run: Run) -> tuple[PipelineResponse, ServedList]:
        req = run.req
        order = run.order
        effects: list[RuleEffect] = []
        placed: dict[int, list[str]] = {}
        pins: dict[int, int] = {}
        caps: list[Cap] = []
        for stage, rules in run.rules:
            order = self._bury_and_boost(run, stage, rules, order, effects, placed)
            in_list = {req.candidates[i].document_id: i for i in order.tolist()}
            for j, pin in enumerate(rules.pin):
                name = pin.name or f"pin[{j}]"
                c = in_list.get(pin.document_id)
                if c is None or pin.position in pins:
                    why = (
                        "not among the candidates left"
                        if c is None
                        else f"slot {pin.position} pinned already"
                    )
                    effects.append(
                        RuleEffect(rule=name, kind="pin", documents=[], detail=f"{pin.document_id}: {why}")
                    )
                    continue
                pins[pin.position] = c
                placed.setdefault(c, []).append(name)
                effects.append(RuleEffect(rule=name, kind="pin", documents=[pin.document_id],
                                          detail=f"slot {pin.position}"))  # fmt: skip
            for j, cap in enumerate(rules.cap):
                values = run.fields.values(cap.field)
                caps.append(
                    Cap([_as_values(v) for v in values], cap.max, cap.within_top, cap.name or f"cap[{j}]")
                )
        k = min(req.top_n or run.top_n or 10, len(order))
        learned = run.learned
        served = learned[2].served_by if learned is not None else ServedBy.static
        eps = learned[0].exploration_rate if learned is not None and served is not ServedBy.unranked else 0.0
        slate = fill_slots(order, k, eps, self.stage._rng(), pins, caps)
        plain = (
            fill_slots(order, k, 0.0, np.random.default_rng(0), pins, caps).shown if eps > 0 else slate.shown
        )
        for limit in caps:
            held = [req.candidates[c].document_id for c, names in slate.capped.items() if limit.name in names]
            effects.append(RuleEffect(rule=limit.name, kind="cap", documents=held,
                                      detail=f"at most {limit.limit} per value" +
                                      (f" in the top {limit.within}" if limit.within else "")))  # fmt: skip
        for c, names in slate.capped.items():
            placed.setdefault(c, []).extend(names)
        rank_of = {c: r for r, c in enumerate(plain.tolist())}
        boost = [float(max(rank_of.get(c, len(plain)) - s, 0)) for s, c in enumerate(slate.shown.tolist())]
        if learned is not None:
            params, sub, scored, idx = learned
            row_of = {c: r for r, c in enumerate(idx.tolist())}
            model_id = params.model_id
        else:
            idx = order
            row_of = {c: r for r, c in enumerate(idx.tolist())}
            sub = RerankRequest.model_construct(
                model_id="pipeline", user_id=None, query=_query(req), candidates=[req.candidates[i] for i in idx.tolist()],
                context={}, top_n=k, exploration_rate=0.0)  # fmt: skip
            scored = Scored(None, _now(), run.scores[idx], ServedBy.static, [], [], None, None, None, run.fields.state,
                            [req.candidates[i].features for i in idx.tolist()])  # fmt: skip
            model_id = "pipeline"
        scored_now = Scored(**{**scored.__dict__, "scores": run.scores[idx]})
        rows = np.array([row_of[c] for c in slate.shown.tolist()], dtype=np.int64)
        extra = [{"rules": placed.get(c, [])} for c in slate.shown.tolist()]
        response, served_list = self.stage.respond(
            sub, scored_now, rows, slate.propensity, eps, model_id, boost=boost, extra=extra,
            response_type=PipelineResponse, top={"stages": run.reports, "rules": effects})  # fmt: skip
        assert isinstance(response, PipelineResponse)
        return response, served_list

    def _bury_and_boost(self, run: Run, stage: Stage, rules: BusinessRules, order: np.ndarray,
                        effects: list[RuleEffect], placed: dict[int, list[str]]) -> np.ndarray:  # fmt: skip
        req = run.req
        for j, bury in enumerate(rules.bury):
            name = bury.name or f"bury[{j}]"
            hit = _matches(stage.conditions[f"bury[{j}]"], run.fields, order)
            order = np.concatenate([order[~hit], order[hit]])
            moved = [int(c) for c in order[len(order) - int(hit.sum()) :]]
            for c in moved:
                placed.setdefault(c, []).append(name)
            effects.append(
                RuleEffect(rule=name, kind="bury", documents=[req.candidates[c].document_id for c in moved])
            )
        for j, boost in enumerate(rules.boost):
            name = boost.name or f"boost[{j}]"
            hit = _matches(stage.conditions[f"boost[{j}]"], run.fields, order)
            matched = set(order[hit].tolist())
            if boost.positions is None:
                order = np.concatenate([order[hit], order[~hit]])
            else:  # each match moves up `positions` ranks, passing only items that do not match
                key = np.arange(len(order), dtype=float) - np.where(hit, boost.positions + 0.5, 0.0)
                order = order[np.argsort(key, kind="stable")]
            moved = [c for c in order.tolist() if c in matched]
            for c in moved:
                placed.setdefault(c, []).append(name)
            effects.append(RuleEffect(rule=name, kind="boost", documents=[req.candidates[c].document_id for c in moved],
                                      detail="to the top" if boost.positions is None else f"up {boost.positions}"))  # fmt: skip
        return order


def _matches(condition: Condition, fields: CandidateFields, order: np.ndarray) -> np.ndarray:
    return np.array(condition.evaluate(Subset(fields, order)), dtype=bool)


def _as_values(v: Any) -> list[Any]:
    if v is None or (isinstance(v, float) and v != v):
        return []
    if isinstance(v, list | tuple):
        return [str(x).casefold() if isinstance(x, str) else x for x in v]
    return [v.casefold() if isinstance(v, str) else v]


def _outer_field(field: str, stage: int, idx: np.ndarray) -> str:
    """A learned stage's error field as the pipeline request's: its candidate numbers mapped back."""
    if field.startswith("candidates["):
        inner = int(field[len("candidates[") : field.index("]")])
        return f"candidates[{int(idx[inner])}]" + field[field.index("]") + 1 :]
    return f"stages[{stage}].parameters.{field}"


def _query(req: PipelineRequest) -> str | None:
    q = req.inputs.get("query")
    return q if isinstance(q, str) else None


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
