"""The stage's HTTP contract: request and response of POST /rerank (the seed's learned_rerank output schema)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from reranker.contracts import InteractionEvent


class Fallback(StrEnum):
    rule_based = "rule_based"
    first_stage = "first_stage"


class ServedBy(StrEnum):
    learned = "learned"
    fallback = "fallback"
    unranked = "unranked"


class UnknownFeaturePolicy(StrEnum):
    reject = "reject"
    ignore = "ignore"


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(min_length=1)
    content: str | None = Field(default=None, description="Its text: matched against the query when the catalog "
                                "does not know the document.")  # fmt: skip
    score: float | None = Field(default=None, description="The first-stage score.")
    features: dict[str, float] = Field(
        default_factory=dict,
        description="Values of the feature set's declared request fields (e.g. in_stock), and of numeric document "
        "attributes to use instead of the stored ones (e.g. a price changed since the catalog was ingested).",
    )


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1)
    user_id: str | None = None
    query: str | None = None
    candidates: list[Candidate] = Field(min_length=1, max_length=1000)
    features: list[str] | None = Field(
        default=None, description="Model features to use; default all it knows."
    )
    context: dict[str, str | float] = Field(
        default_factory=dict, description="The request's context: the feature set's declared context fields."
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


class FeatureContribution(BaseModel):
    name: str
    contribution: float


class LearnedRerank(BaseModel):
    personalization_score: float
    exploration_boost: float = Field(
        description="Ranks the item moved up through exploration (0: not moved)."
    )
    user_segment: int | None
    top_features: list[FeatureContribution]


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


class InteractionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[InteractionEvent] = Field(min_length=1, max_length=10_000)


class InteractionReceipt(BaseModel):
    accepted: int
    users_updated: int
