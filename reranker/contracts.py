"""Event contracts: what is logged at serving time and ingested for training.

Every served list is logged with its request_id, the (hashed) user, the model version and variant and, per item,
position, score and propensity. Every interaction references the request_id that showed the item. That is what
makes position-bias correction, off-policy evaluation and canary analysis possible without a schema change.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class InteractionType(StrEnum):
    impression = "impression"
    click = "click"
    add_to_cart = "add_to_cart"
    purchase = "purchase"
    rating = "rating"
    skip = "skip"


# What counts as a positive signal for features and labels.
POSITIVE_TYPES = frozenset({InteractionType.click, InteractionType.add_to_cart, InteractionType.purchase})
POSITIVE_RATING = 4.0

# A user id already in stored form (e.g. landed by the serving stage): never hashed again, never accepted from callers.
STORED_KEY_PREFIX = "userkey:"


class InteractionEvent(BaseModel):
    """One thing a user did with one document (or one impression of it)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        min_length=1, max_length=256, description="Unique id; re-ingesting the same event adds nothing."
    )
    request_id: str | None = Field(
        default=None, max_length=128, description="The served list that showed the document."
    )
    interaction_type: InteractionType
    user_id: str = Field(min_length=1, max_length=300)
    document_id: str = Field(min_length=1, max_length=256)
    query: str | None = Field(default=None, max_length=2_000)
    position: int | None = Field(default=None, ge=0, description="0-based slot the document was shown in.")
    propensity: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Probability the logging policy showed this document at this position.",
    )
    value: float | None = Field(default=None, description="Rating, dwell seconds, order value, ...")
    score: float | None = Field(
        default=None,
        description="The candidate's first-stage score (the retriever's; training reads it as the first stage). "
        "The stage logs the score the caller sent, not its own (that one is in the served-list log).",
    )
    timestamp: datetime
    model_version: str | None = Field(default=None, max_length=64)
    variant: str | None = Field(default=None, max_length=64, description="champion, canary, fallback, ...")
    features: dict[str, float] | None = Field(
        default=None,
        max_length=256,
        description="The candidate's request-time features (declared request fields), if logged.",
    )
    context: dict[str, str | float] | None = Field(
        default=None,
        max_length=64,
        description="The request's context (declared context fields: device, locale, ...), if logged.",
    )


class ServedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str
    position: int = Field(ge=0)
    score: float
    propensity: float = Field(gt=0, le=1)
    features: dict[str, float] | None = Field(default=None, description="The candidate's request features.")
    first_stage_score: float | None = Field(
        default=None,
        description="The candidate's first-stage score as the caller sent it (what the next training "
        "learns from as the first stage; `score` is the served ranker's).",
    )


class ServedListEvent(BaseModel):
    """One response of the rerank stage, as shown to the user."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    user_id: str = Field(description="Hashed user id.")
    query: str | None = None
    model_id: str
    model_version: str | None = None
    variant: str
    served_by: str = Field(description="learned, fallback or unranked")
    timestamp: datetime
    items: list[ServedItem]
    exploration_rate: float = Field(
        default=0.0, ge=0, le=1, description="The epsilon the items were drawn with."
    )
    n_candidates: int | None = Field(
        default=None, ge=0, description="How many candidates the list came from."
    )
    context: dict[str, str | float] | None = Field(default=None, description="The request's context.")


INTERACTION_COLUMNS = list(InteractionEvent.model_fields)
REQUIRED_COLUMNS = ["event_id", "interaction_type", "user_id", "document_id", "timestamp"]


def json_schemas() -> dict[str, Any]:
    return {
        "InteractionEvent": InteractionEvent.model_json_schema(),
        "ServedListEvent": ServedListEvent.model_json_schema(),
    }


def write_json_schemas(path: Path) -> None:
    path.write_text(json.dumps(json_schemas(), indent=2, sort_keys=True) + "\n")
