"""A retrieval pipeline's definition, in the seed's own JSON: a list of `{stage_type, stage_id, parameters}` whose
parameters may name the request's inputs as `{{INPUT.name}}`, resolved here into typed stages.

| stage_id | stage_type | what it does here |
|---|---|---|
| `semantic_search`, `hybrid_search` | filter | retrieval stays the caller's: it stands for the candidates sent (its `top_k` keeps that many, in first-stage order) |
| `structured_filter` | filter | keeps the candidates matching `conditions` (`models.conditions`) |
| `rerank` | sort | the static query-document model (`bm25` by default, or `tfidf`); `top_k`/`top_n` keeps that many |
| `learned_rerank` | sort | the learned stage (the parameters of POST /rerank); its `exploration_rate` applies at the end |
| `mmr` | sort | maximal marginal relevance over `fields` (catalog or candidate attributes) or the candidates' text |
| `business_rules` | sort | `pin`, `boost`, `bury`, `cap`: applied after the last sort stage, before exploration |

One definition serves both POST /pipeline and the offline evaluation (`reranker pipeline evaluate`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.conditions import Condition, ConditionError, check_field, parse_condition

STAGES = {"semantic_search": "filter", "hybrid_search": "filter", "structured_filter": "filter", "rerank": "sort",
          "learned_rerank": "sort", "mmr": "sort", "business_rules": "sort"}  # fmt: skip
TEMPLATE = re.compile(r"\{\{\s*INPUT\.([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
MAX_STAGES = 16


class StageError(ValueError):
    """A stage the pipeline cannot run; `field` names where (e.g. `stages[2].parameters.lambda`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage_type: Literal["filter", "sort", "reduce", "apply"]
    stage_id: str = Field(min_length=1, max_length=64, description="Which stage: " + ", ".join(STAGES) + ".")
    stage_name: str | None = Field(default=None, max_length=128, description="Your label for it (optional).")
    parameters: dict[str, Any] = Field(default_factory=dict)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Retrieval(_Params):
    model_config = ConfigDict(
        extra="allow"
    )  # the retriever's own settings (vector index, fusion, ...): not ours
    query: str | None = None
    top_k: int | None = Field(default=None, ge=1, le=1000)


class StructuredFilter(_Params):
    conditions: Any
    case_sensitive: bool = False


class StaticRerank(_Params):
    query: str | None = Field(default=None, max_length=2_000)
    model: Literal["bm25", "tfidf"] = "bm25"
    top_k: int | None = Field(default=None, ge=1, le=1000)
    top_n: int | None = Field(default=None, ge=1, le=1000)


class LearnedRerankParams(_Params):
    model_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    query: str | None = Field(default=None, max_length=2_000)
    features: list[str] | None = Field(default=None, max_length=1_000)
    context: dict[str, Any] = Field(default_factory=dict, max_length=64)
    top_n: int = Field(default=10, ge=1, le=1000)
    exploration_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    fallback: Literal["rule_based", "first_stage", "rerank"] | None = None
    unknown_features: Literal["reject", "ignore"] = "reject"


class Mmr(_Params):
    lambda_: float = Field(default=0.5, ge=0.0, le=1.0, alias="lambda")
    top_k: int | None = Field(default=None, ge=1, le=1000)
    top_n: int | None = Field(default=None, ge=1, le=1000)
    fields: list[str] | None = Field(default=None, max_length=32, description="metadata.* / features.* fields; "
                                     "default every categorical attribute of the catalog")  # fmt: skip
    diversity_field: str | None = None  # one field, the seed's shorthand
    vector: Literal["attributes", "text"] = "attributes"

    @field_validator("fields")
    @classmethod
    def _known(cls, fields: list[str] | None) -> list[str] | None:
        for f in fields or []:
            try:
                check_field(f, "fields")
            except ConditionError as exc:
                raise ValueError(str(exc)) from None
        return fields


class Pin(_Params):
    document_id: str = Field(min_length=1, max_length=256)
    position: int = Field(ge=0, le=999, description="0-based slot, as logged positions")
    name: str | None = Field(default=None, max_length=64)


class Boost(_Params):
    when: Any = Field(description="a condition, as structured_filter's")
    positions: int | None = Field(
        default=None, ge=1, le=1000, description="ranks to move up; default to the top"
    )
    name: str | None = Field(default=None, max_length=64)


class Bury(_Params):
    when: Any
    name: str | None = Field(default=None, max_length=64)


class CapRule(_Params):
    field: str
    max: int = Field(ge=1, le=1000)
    within_top: int | None = Field(default=None, ge=1, le=1000, description="default the whole slate")
    name: str | None = Field(default=None, max_length=64)


class BusinessRules(_Params):
    pin: list[Pin] = Field(default_factory=list, max_length=100)
    boost: list[Boost] = Field(default_factory=list, max_length=100)
    bury: list[Bury] = Field(default_factory=list, max_length=100)
    cap: list[CapRule] = Field(default_factory=list, max_length=20)


PARAMS: dict[str, type[_Params]] = {"semantic_search": Retrieval, "hybrid_search": Retrieval,
                                    "structured_filter": StructuredFilter, "rerank": StaticRerank,
                                    "learned_rerank": LearnedRerankParams, "mmr": Mmr,
                                    "business_rules": BusinessRules}  # fmt: skip


class Stage(BaseModel):
    """One resolved stage: its id, its label and its typed parameters; conditions parsed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int
    stage_id: str
    label: str
    params: Any
    conditions: dict[str, Condition] = Field(
        default_factory=dict
    )  # structured_filter: "", rules: "boost[0]"...


def render(value: Any, inputs: dict[str, Any], where: str) -> Any:
    """`value` with every `{{INPUT.name}}` replaced: a string that is one template becomes the input itself (any
    JSON type); one template among other text is replaced by the input's text."""
    if isinstance(value, dict):
        return {k: render(v, inputs, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, inputs, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{{" not in value:
        return value

    def lookup(path: str) -> Any:
        node: Any = inputs
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise StageError(
                    where, f"{{{{INPUT.{path}}}}}: no input {path!r} (inputs given: {sorted(inputs)})"
                )
            node = node[part]
        return node

    whole = TEMPLATE.fullmatch(value.strip())
    if whole:
        return lookup(whole.group(1))
    return TEMPLATE.sub(lambda m: "" if (v := lookup(m.group(1))) is None else str(v), value)


def resolve(stages: list[StageSpec], inputs: dict[str, Any]) -> list[Stage]:
    """Typed stages of a definition, or a `StageError` naming the field at fault."""
    if not stages:
        raise StageError("stages", "a pipeline has at least one stage")
    if len(stages) > MAX_STAGES:
        raise StageError("stages", f"at most {MAX_STAGES} stages")
    out = []
    for i, spec in enumerate(stages):
        where = f"stages[{i}]"
        kind = STAGES.get(spec.stage_id)
        if kind is None:
            raise StageError(
                f"{where}.stage_id", f"unknown stage {spec.stage_id[:64]!r}: one of {sorted(STAGES)}"
            )
        if spec.stage_type != kind:
            raise StageError(
                f"{where}.stage_type", f"{spec.stage_id} is a {kind} stage, not {spec.stage_type}"
            )
        raw = render(spec.parameters, inputs, f"{where}.parameters")
        if spec.stage_id == "learned_rerank":
            raw.setdefault("user_id", inputs.get("user_id"))  # the seed's default: {{INPUT.user_id}}
            if raw["user_id"] is None:
                raw.pop("user_id")
        if (
            spec.stage_id in ("rerank", "semantic_search", "hybrid_search", "learned_rerank")
            and "query" not in raw
        ) and isinstance(inputs.get("query"), str):
            raw["query"] = inputs["query"]
        try:
            params = PARAMS[spec.stage_id].model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise StageError(f"{where}.parameters{'.' + loc if loc else ''}", first["msg"]) from None
        conditions: dict[str, Condition] = {}
        try:
            if isinstance(params, StructuredFilter):
                conditions[""] = parse_condition(params.conditions, "", params.case_sensitive)
            elif isinstance(params, BusinessRules):
                for j, b in enumerate(params.boost):
                    conditions[f"boost[{j}]"] = parse_condition(b.when, f"boost[{j}].when")
                for j, d in enumerate(params.bury):
                    conditions[f"bury[{j}]"] = parse_condition(d.when, f"bury[{j}].when")
                for j, c in enumerate(params.cap):
                    check_field(c.field, f"cap[{j}].field")
            elif isinstance(params, Mmr) and params.diversity_field:
                check_field(params.diversity_field, "diversity_field")
        except ConditionError as exc:
            path = exc.path if exc.path.startswith("[") else "." + exc.path.lstrip(".") if exc.path else ""
            name = ".conditions" if isinstance(params, StructuredFilter) else ""
            field = f"{where}.parameters{name}{path}"
            raise StageError(field, str(exc)) from None
        out.append(Stage(index=i, stage_id=spec.stage_id, label=spec.stage_name or spec.stage_id, params=params,
                         conditions=conditions))  # fmt: skip
    if sum(s.stage_id == "learned_rerank" for s in out) > 1:
        raise StageError("stages", "at most one learned_rerank stage")
    return out
