"""The stage's HTTP contract: request and response of POST /rerank (the seed's learned_rerank output schema)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.pipeline_spec import StageSpec
from reranker.contracts import STORED_KEY_PREFIX, InteractionEvent

# bounds on what one request may carry (a body is also capped in bytes: RERANKER_MAX_BODY_BYTES)
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MAX_FEATURES_PER_CANDIDATE = 256


def _not_a_stored_key(user_id: str | None) -> str | None:
    """Clients send user ids as they know them; the stored form is the stage's own."""
    if user_id is not None and user_id.startswith(STORED_KEY_PREFIX):
        raise ValueError(f"user ids starting with {STORED_KEY_PREFIX!r} are reserved")
    return user_id


class Fallback(StrEnum):
    rule_based = "rule_based"
    first_stage = "first_stage"
    rerank = "rerank"  # the static query-document model (BM25 over the candidates' content)


class ServedBy(StrEnum):
    learned = "learned"
    fallback = "fallback"
    unranked = "unranked"
    static = "static"  # a pipeline without a learned_rerank stage


class UnknownFeaturePolicy(StrEnum):
    reject = "reject"
    ignore = "ignore"


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(min_length=1, max_length=256)
    content: str | None = Field(default=None, max_length=20_000, description="Its text: matched against the query "
                                "when the catalog does not know the document.")  # fmt: skip
    score: float | None = Field(default=None, description="The first-stage score.")
    features: dict[Name, float] = Field(
        default_factory=dict,
        max_length=MAX_FEATURES_PER_CANDIDATE,
        description="Values of the feature set's declared request fields (e.g. in_stock), and of numeric document "
        "attributes to use instead of the stored ones (e.g. a price changed since the catalog was ingested).",
    )


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    query: str | None = Field(default=None, max_length=2_000)
    candidates: list[Candidate] = Field(min_length=1, max_length=1000)
    features: list[Name] | None = Field(
        default=None, max_length=1_000, description="Model features to use; default all it knows."
    )
    context: dict[Name, Annotated[str, StringConstraints(max_length=256)] | float] = Field(
        default_factory=dict,
        max_length=64,
        description="The request's context: the feature set's declared context fields.",
    )
    top_n: int = Field(default=10, ge=1, le=1000)
    exploration_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    fallback: Fallback | None = Field(
        default=None,
        description="What serves when the learned model cannot; default the fallback the served model's training "
        "found best on your data, or the first-stage order when no model is served.",
    )
    unknown_features: UnknownFeaturePolicy = Field(
        default=UnknownFeaturePolicy.reject,
        description="Candidate features the feature set does not declare: reject (422) or ignore them.",
    )

    _user = field_validator("user_id")(_not_a_stored_key)


class FeatureContribution(BaseModel):
    name: str = Field(description="The model input, `family.name`.")
    value: str = Field(description="Its value for this item, as in `top_features`.")
    contribution: float = Field(description="Its SHAP contribution to the item's score.")


class LearnedRerank(BaseModel):
    personalization_score: float
    exploration_boost: float = Field(
        description="Ranks the item moved up through exploration (0: not moved)."
    )
    user_segment: str | None = Field(
        description="The user's segment, named by what its users prefer (e.g. `drama_fan`, `low_price_fan`)."
    )
    user_segment_id: int | None = Field(
        default=None, description="The segment's number in the feature build."
    )
    top_features: list[str] = Field(
        description="The inputs that moved the score most, as `feature:value` (e.g. `category:technology`)."
    )
    top_feature_contributions: list[FeatureContribution] = Field(
        default_factory=list, description="The same inputs with their full names and SHAP contributions."
    )


class RerankResult(BaseModel):
    document_id: str
    content: str | None
    score: float
    learned_rerank: LearnedRerank


class RerankResponse(BaseModel):
    request_id: str
    model_id: str
    model_version: str | None
    variant: str
    served_by: ServedBy
    reason: str
    reason_codes: list[str] = Field(default_factory=list, description="Short machine-readable reasons.")
    results: list[RerankResult]


MetadataValue = (
    Annotated[str, StringConstraints(max_length=256)]
    | float
    | bool
    | None
    | Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=64)]
)
InputValue = (
    Annotated[str, StringConstraints(max_length=2_000)]
    | float
    | bool
    | None
    | Annotated[list[Annotated[str, StringConstraints(max_length=256)] | float], Field(max_length=256)]
)


class PipelineCandidate(Candidate):
    metadata: dict[Name, MetadataValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Attributes of the document for filters, rules and diversity (`metadata.<name>`); the "
        "catalog's stored attributes fill in those not sent.",
    )


class PipelineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[Name, InputValue] = Field(
        default_factory=dict, max_length=64, description="Values the stages name as {{INPUT.<name>}}."
    )
    candidates: list[PipelineCandidate] = Field(min_length=1, max_length=1000)
    stages: list[StageSpec] = Field(min_length=1, max_length=16)
    top_n: int | None = Field(default=None, ge=1, le=1000, description="Slate size; default the last sort "
                              "stage's top_n (or top_k), else 10.")  # fmt: skip

    @field_validator("inputs")
    @classmethod
    def _client_user(cls, inputs: dict[str, object]) -> dict[str, object]:
        user = inputs.get("user_id")
        if isinstance(user, str):
            _not_a_stored_key(user)
        return inputs


class StageReport(BaseModel):
    stage_id: str
    stage_name: str
    candidates_in: int
    candidates_out: int
    ms: float = Field(description="Time in the stage.")
    detail: str = ""


class RuleEffect(BaseModel):
    rule: str = Field(description="The rule: its name, or kind[index] (e.g. `boost[0]`).")
    kind: str
    documents: list[str] = Field(description="The documents it moved, pinned or held back (capped).")
    detail: str = ""


class PipelineResult(RerankResult):
    rules: list[str] = Field(default_factory=list, description="Rules that placed this item.")


class PipelineResponse(RerankResponse):
    results: list[PipelineResult]  # type: ignore[assignment]
    stages: list[StageReport]
    rules: list[RuleEffect] = Field(default_factory=list)


class ErrorDetail(BaseModel):
    field: str = Field(description="The request field (or header) at fault.")
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail | list[dict[str, object]] = Field(
        description="The field at fault, or (422 from validation) FastAPI's list of errors, each with its `loc`."
    )


class InteractionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[InteractionEvent] = Field(min_length=1, max_length=1_000)

    @field_validator("events")
    @classmethod
    def _client_ids(cls, events: list[InteractionEvent]) -> list[InteractionEvent]:
        for event in events:
            _not_a_stored_key(event.user_id)
        return events


class InteractionReceipt(BaseModel):
    accepted: int
    users_updated: int
    ignored_opted_out: int = Field(
        default=0, description="Events of users who opted out: not landed, not used."
    )
