"""POST /pipeline: the seed's stages over the candidates the caller sends (`models.pipeline_run`), in process.

Retrieval is the caller's (a `semantic_search` / `hybrid_search` stage stands for the candidates sent). The learned
stage is `RerankPipeline.score` - the same path, fallbacks and time budget as POST /rerank - and its explanations come
with each result; the slots are filled under the business rules with its exploration, and the served list is logged
with the propensities of what was shown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from models.diversity import catalog_fields
from models.pipeline_run import PipelineRun, RuleOutcome, cap_outcomes, run_stages
from models.pipeline_spec import LearnedRerankParams, Stage, StageError, resolve
from serving.errors import FieldError
from serving.model_cache import RegistryUnavailable
from serving.online_features import FeatureState
from serving.pipeline import RerankPipeline, Scored, ServedList
from serving.schemas import (
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
                out = [c.metadata.get(name) for c in cands]
                if self.state is not None and any(name not in c.metadata for c in cands):
                    stored = self.state.documents.attribute(name, self.rows())
                    out = [v if name in c.metadata else s for c, v, s in zip(cands, out, stored, strict=True)]
        self._cache[field] = out
        return out


def diversity_fields(state: FeatureState | None, candidates: Sequence[PipelineCandidate]) -> list[str]:
    """MMR's default fields: the catalog's categorical attributes, else the categorical metadata sent."""
    if state is None:
        return sorted(
            {f"metadata.{k}" for c in candidates for k, v in c.metadata.items() if isinstance(v, str | list)}
        )
    return catalog_fields(state.manifest.feature_set)


@dataclass
class PipelineRunner:
    stage: RerankPipeline

    def run(
        self, req: PipelineRequest, stages: list[Stage] | None = None
    ) -> tuple[PipelineResponse, ServedList]:
        """`stages`: the request's, resolved already (default: resolved here)."""
        started = time.perf_counter()  # one budget: the learned stage's deadline counts from here
        stages = stages if stages is not None else resolve(req.stages, dict(req.inputs))
        state = None
        if self.stage.features is not None:
            # the catalog unreadable: filters see what the candidates carry, and the learned stage falls back
            with contextlib.suppress(Exception):
                state = self.stage.features.state()
        fields = CandidateFields(req.candidates, state)
        first = np.array([np.nan if c.score is None else c.score for c in req.candidates], dtype=float)
        learned: dict[str, Any] = {}

        def score(params: LearnedRerankParams, idx: np.ndarray) -> tuple[np.ndarray, str]:
            stage_index = next(s.index for s in stages if s.stage_id == "learned_rerank")
            sub = self._sub_request(req, params, idx, stage_index)
            try:
                scored = self.stage.score(sub, started)
            except FieldError as exc:  # the sub-request's candidates are the pipeline's, in this order
                raise type(exc)(_outer_field(exc.field, stage_index, idx), str(exc)) from exc
            learned.update(sub=sub, scored=scored)
            return scored.scores, scored.served_by.value

        run = run_stages(
            stages, fields, first, score, diversity_fields(state, req.candidates), self._model_exists
        )
        return self._respond(req, run, fields, learned)

    def _model_exists(self, stage: Stage) -> None:
        """A learned stage left without candidates still answers 404 for a model that does not exist."""
        if isinstance(stage.params, LearnedRerankParams):
            with contextlib.suppress(RegistryUnavailable):
                self.stage.models.choose(stage.params.model_id, None)

    @staticmethod
    def _sub_request(req: PipelineRequest, params: LearnedRerankParams, idx: np.ndarray,
                     stage_index: int) -> RerankRequest:  # fmt: skip
        try:  # the parameters validated as /rerank's, with one candidate; then the candidates, validated already
            shell = RerankRequest.model_validate({
                "model_id": params.model_id, "user_id": params.user_id, "query": params.query,
                "candidates": [{"document_id": "-"}], "features": params.features, "context": params.context,
                "top_n": params.top_n, "exploration_rate": params.exploration_rate, "fallback": params.fallback,
                "unknown_features": params.unknown_features})  # fmt: skip
            return shell.model_copy(update={"candidates": [req.candidates[i] for i in idx.tolist()]})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in error["loc"])
            raise StageError(f"stages[{stage_index}].parameters.{loc}", error["msg"]) from None

    def _respond(self, req: PipelineRequest, run: PipelineRun, fields: CandidateFields,
                 learned: dict[str, Any]) -> tuple[PipelineResponse, ServedList]:  # fmt: skip
        k = run.size(req.top_n)
        eps = run.exploration_rate()
        slate = run.fill(k, eps, self.stage._rng())
        plain = run.fill(k, 0.0, np.random.default_rng(0)).shown if eps > 0 else slate.shown
        rules = run.rules + cap_outcomes(run, slate)
        placed = {c: list(names) for c, names in run.placed.items()}
        for c, names in slate.capped.items():
            placed.setdefault(c, []).extend(names)
        rank_of = {c: r for r, c in enumerate(plain.tolist())}
        boost = [float(max(rank_of.get(c, len(plain)) - s, 0)) for s, c in enumerate(slate.shown.tolist())]
        if learned:
            sub, scored, idx = learned["sub"], learned["scored"], run.learned_index
            assert idx is not None and run.learned is not None
            model_id = run.learned.model_id
        else:
            idx = run.order
            sub = RerankRequest.model_construct(
                model_id="pipeline", user_id=None, query=_text(req.inputs.get("query")),
                candidates=[req.candidates[i] for i in idx.tolist()], context={}, top_n=k, exploration_rate=0.0)  # fmt: skip
            scored = Scored(None, datetime.now(UTC), run.scores[idx], ServedBy.static, [], [], None, None, None,
                            fields.state, [req.candidates[i].features for i in idx.tolist()])  # fmt: skip
            model_id = "pipeline"
        row_of = {c: r for r, c in enumerate(idx.tolist())}
        final = Scored(
            **{**scored.__dict__, "scores": run.scores[idx]}
        )  # each item's score from the last sort
        rows = np.array([row_of[c] for c in slate.shown.tolist()], dtype=np.int64)
        ids = fields.values("document_id")
        top = {"stages": [StageReport(stage_id=s.stage_id, stage_name=s.label, candidates_in=s.candidates_in,
                                      candidates_out=s.candidates_out, ms=s.ms, detail=s.detail)
                          for s in run.stages],
               "rules": [_effect(r, ids) for r in rules]}  # fmt: skip
        response, served = self.stage.respond(sub, final, rows, slate.propensity, eps, model_id, boost=boost,
                                              extra=[{"rules": placed.get(c, [])} for c in slate.shown.tolist()],
                                              response_type=PipelineResponse, top=top)  # fmt: skip
        assert isinstance(response, PipelineResponse)
        return response, served


def _effect(rule: RuleOutcome, ids: list[str]) -> RuleEffect:
    return RuleEffect(
        rule=rule.rule, kind=rule.kind, documents=[ids[c] for c in rule.members], detail=rule.detail
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _outer_field(field: str, stage: int, idx: np.ndarray) -> str:
    """A learned stage's error field as the pipeline request's: its candidate numbers mapped back."""
    if field.startswith("candidates["):
        inner = int(field[len("candidates[") : field.index("]")])
        return f"candidates[{int(idx[inner])}]" + field[field.index("]") + 1 :]
    return f"stages[{stage}].parameters.{field}"
