"""Running a pipeline definition's stages over one list of candidates: the same code for POST /pipeline and for the
offline evaluation (`models.pipeline_eval`), which differ only in where the learned stage's scores come from (the
served model on online features; a model's out-of-sample scores on point-in-time features).

Filter and sort stages run in the order given; `business_rules` are collected and applied after the last sort stage
(bury, then boost; pins and caps are constraints of the slot filling, `models.slate.fill_slots`, with exploration).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.conditions import Condition, FieldSource
from models.diversity import attribute_similarity, mmr_order
from models.pipeline_spec import (
    BusinessRules,
    LearnedRerankParams,
    Mmr,
    Retrieval,
    Stage,
    StaticRerank,
    StructuredFilter,
)
from models.ranker import FirstStageRanker, finite_scores
from models.slate import Cap, Slate, fill_slots
from models.static_rerank import StaticRanker

LearnedScorer = Callable[[LearnedRerankParams, np.ndarray], tuple[np.ndarray, str]]  # (params, candidates) ->
# (their scores, what served them)


@dataclass(frozen=True)
class Subset:
    """Some candidates of a `FieldSource`, as one."""

    source: FieldSource
    index: np.ndarray

    def values(self, field: str) -> list[Any]:
        column = self.source.values(field)
        return [column[i] for i in self.index.tolist()]


@dataclass
class StageOutcome:
    stage_id: str
    label: str
    candidates_in: int
    candidates_out: int
    ms: float
    detail: str = ""


@dataclass
class RuleOutcome:
    rule: str
    kind: str
    members: list[int]  # candidate indexes it moved, pinned or held back
    detail: str = ""


@dataclass
class PipelineRun:
    """A list after the stages: the deterministic order, each candidate's last sort score, what each stage and rule
    did, and the constraints and exploration rate the slots are filled with."""

    order: np.ndarray
    scores: np.ndarray
    stages: list[StageOutcome] = field(default_factory=list)
    rules: list[RuleOutcome] = field(default_factory=list)
    placed: dict[int, list[str]] = field(default_factory=dict)  # candidate -> the rules that placed it
    pins: dict[int, int] = field(default_factory=dict)
    caps: list[Cap] = field(default_factory=list)
    top_n: int | None = None
    learned: LearnedRerankParams | None = None
    learned_index: np.ndarray | None = (
        None  # the candidates the learned stage scored, in the order it got them
    )
    served_by: str = "static"
    _rules: list[tuple[Stage, BusinessRules]] = field(default_factory=list)

    def size(self, top_n: int | None = None) -> int:
        return min(top_n or self.top_n or 10, len(self.order))

    def exploration_rate(self) -> float:
        return (
            self.learned.exploration_rate
            if self.learned is not None and self.served_by != "unranked"
            else 0.0
        )

    def fill(self, k: int, epsilon: float, rng: np.random.Generator) -> Slate:
        return fill_slots(self.order, k, epsilon, rng, self.pins, self.caps)


def run_stages(stages: Sequence[Stage], fields: FieldSource, first_stage: np.ndarray,
               learned: LearnedScorer | None, diversity_fields: Sequence[str] = (),
               when_empty: Callable[[Stage], None] | None = None) -> PipelineRun:  # fmt: skip
    """The stages over the candidates of `fields` (their first-stage scores `first_stage`). `learned` scores the
    candidates a learned_rerank stage gets; `diversity_fields` are MMR's default fields; `when_empty` is called for
    a stage that gets no candidates (serving checks that the model exists)."""
    base = finite_scores(FirstStageRanker().score_matrix(np.asarray(first_stage, dtype=float)[:, None]))
    run = PipelineRun(np.argsort(-base, kind="stable"), base)
    for stage in stages:
        started = time.perf_counter()
        before = len(run.order)
        if before:
            detail = STAGE_RUNNERS[stage.stage_id](run, stage, fields, learned, diversity_fields)
        else:
            detail = "no candidates left"
            if when_empty is not None:
                when_empty(stage)
        run.stages.append(StageOutcome(stage.stage_id, stage.label, before, len(run.order),
                                       round((time.perf_counter() - started) * 1000, 3), detail))  # fmt: skip
    _apply_rules(run, fields)
    return run


def _retrieval(run: PipelineRun, stage: Stage, *_: Any) -> str:
    params: Retrieval = stage.params
    if params.top_k is not None:
        run.order = run.order[: params.top_k]
    return "retrieval is the caller's: the candidates sent, in first-stage order"


def _structured_filter(run: PipelineRun, stage: Stage, fields: FieldSource, *_: Any) -> str:
    params: StructuredFilter = stage.params
    keep = np.array(stage.conditions[""].evaluate(Subset(fields, run.order)), dtype=bool)
    run.order = run.order[keep]
    return f"{int((~keep).sum())} filtered out" + (" (case-sensitive)" if params.case_sensitive else "")


def _sort(run: PipelineRun, idx: np.ndarray, scores: np.ndarray, keep: int | None) -> None:
    run.scores = run.scores.copy()
    run.scores[idx] = scores
    run.order = idx[np.argsort(-scores, kind="stable")]
    if keep is not None:
        run.order = run.order[:keep]
        run.top_n = keep


def _rerank(run: PipelineRun, stage: Stage, fields: FieldSource, *_: Any) -> str:
    params: StaticRerank = stage.params
    idx = run.order
    first = np.array([np.nan if s is None else s for s in Subset(fields, idx).values("score")], dtype=float)
    scores = StaticRanker(model=params.model).score_request(
        params.query, Subset(fields, idx).values("content"), first
    )
    _sort(run, idx, scores, params.top_n or params.top_k)
    return f"{params.model} over the candidates' content" + (
        "" if params.query else " (no query: first-stage order)"
    )


def _learned_rerank(run: PipelineRun, stage: Stage, fields: FieldSource, learned: LearnedScorer | None,
                    *_: Any) -> str:  # fmt: skip
    params: LearnedRerankParams = stage.params
    if learned is None:
        raise ValueError("this run has no learned model to score with")
    idx = run.order
    scores, served_by = learned(params, idx)
    _sort(run, idx, scores, params.top_n)
    run.learned, run.learned_index, run.served_by = params, idx, served_by
    return f"served_by {served_by}"


def _mmr(run: PipelineRun, stage: Stage, fields: FieldSource, _: Any, diversity_fields: Sequence[str]) -> str:
    params: Mmr = stage.params
    idx = run.order
    if params.vector == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [t or "" for t in Subset(fields, idx).values("content")]
        try:
            rows = TfidfVectorizer().fit_transform(texts)  # L2-normalized rows: their products are cosines
            sim = (rows @ rows.T).toarray()
            np.fill_diagonal(sim, 1.0)
        except ValueError:  # no words at all
            sim = np.eye(len(idx))
        used = "the candidates' text"
    else:
        names = params.fields or (
            [params.diversity_field] if params.diversity_field else list(diversity_fields)
        )
        sim = (
            attribute_similarity([Subset(fields, idx).values(f) for f in names])
            if names
            else np.eye(len(idx))
        )
        used = ", ".join(names) or "nothing (no categorical attribute)"
    keep = params.top_n or params.top_k
    run.order = idx[mmr_order(run.scores[idx], sim, params.lambda_, keep)]
    if keep is not None:
        run.top_n = keep
    return f"lambda {params.lambda_} over {used}"


def _business_rules(run: PipelineRun, stage: Stage, *_: Any) -> str:
    run._rules.append((stage, stage.params))
    return "applied after the last sort stage, before exploration"


STAGE_RUNNERS: dict[str, Callable[..., str]] = {
    "semantic_search": _retrieval, "hybrid_search": _retrieval, "structured_filter": _structured_filter,
    "rerank": _rerank, "learned_rerank": _learned_rerank, "mmr": _mmr, "business_rules": _business_rules,
}  # fmt: skip


def _matches(condition: Condition, fields: FieldSource, order: np.ndarray) -> np.ndarray:
    return np.array(condition.evaluate(Subset(fields, order)), dtype=bool)


def _as_values(v: Any) -> list[Any]:
    """A field's values for a cap (strings compared case-insensitively)."""
    if v is None or (isinstance(v, float) and v != v):
        return []
    if isinstance(v, list | tuple):
        return [str(x).casefold() if isinstance(x, str) else x for x in v]
    return [v.casefold() if isinstance(v, str) else v]


def _apply_rules(run: PipelineRun, fields: FieldSource) -> None:
    ids = fields.values("document_id")
    for stage, rules in run._rules:
        order = run.order
        for j, bury in enumerate(rules.bury):
            name = bury.name or f"bury[{j}]"
            hit = _matches(stage.conditions[f"bury[{j}]"], fields, order)
            order = np.concatenate([order[~hit], order[hit]])
            moved = order[len(order) - int(hit.sum()) :].tolist()
            run.rules.append(RuleOutcome(name, "bury", moved))
            for c in moved:
                run.placed.setdefault(c, []).append(name)
        for j, boost in enumerate(rules.boost):
            name = boost.name or f"boost[{j}]"
            hit = _matches(stage.conditions[f"boost[{j}]"], fields, order)
            matched = set(order[hit].tolist())
            if boost.positions is None:
                order = np.concatenate([order[hit], order[~hit]])
            else:  # each match moves up `positions` ranks, passing only items that do not match
                key = np.arange(len(order), dtype=float) - np.where(hit, boost.positions + 0.5, 0.0)
                order = order[np.argsort(key, kind="stable")]
            moved = [c for c in order.tolist() if c in matched]
            run.rules.append(RuleOutcome(name, "boost", moved,
                                         "to the top" if boost.positions is None else f"up {boost.positions}"))  # fmt: skip
            for c in moved:
                run.placed.setdefault(c, []).append(name)
        run.order = order
        in_list = {ids[c]: c for c in order.tolist()}
        for j, pin in enumerate(rules.pin):
            name = pin.name or f"pin[{j}]"
            c = in_list.get(pin.document_id)
            if c is None or pin.position in run.pins:
                why = "not among the candidates left" if c is None else f"slot {pin.position} pinned already"
                run.rules.append(RuleOutcome(name, "pin", [], f"{pin.document_id}: {why}"))
                continue
            run.pins[pin.position] = c
            run.placed.setdefault(c, []).append(name)
            run.rules.append(RuleOutcome(name, "pin", [c], f"slot {pin.position}"))
        for j, rule in enumerate(rules.cap):
            values = fields.values(rule.field)
            run.caps.append(
                Cap([_as_values(v) for v in values], rule.max, rule.within_top, rule.name or f"cap[{j}]")
            )


def cap_outcomes(run: PipelineRun, slate: Slate) -> list[RuleOutcome]:
    """What each cap held back in this slate (and the placed notes of those documents)."""
    out = []
    for cap in run.caps:
        held = [c for c, names in slate.capped.items() if cap.name in names]
        out.append(RuleOutcome(cap.name, "cap", held, f"at most {cap.limit} per value" +
                               (f" in the top {cap.within}" if cap.within else "")))  # fmt: skip
    return out
