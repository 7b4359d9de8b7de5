"""The model card: what a registered model needs and promises, one typed, versioned object.

Its ordered inputs (name, family, how each is computed), the encodings they read (category vocabularies, bucket
edges), the feature set and version it was trained on, the data window and lists, the fallback that ranked best on
the same data, and every gate's verdict. Registered beside the model (`serving/model_card.json`); serving builds the
model's input plan from it and refuses the model when the current features cannot supply it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from feature_repo.inputs import ModelInput
from feature_repo.manifest import Encodings

CARD_FILE = "model_card.json"


class GateStatus(StrEnum):
    passed = "pass"
    failed = "fail"
    not_gated = "not gated"


class GateVerdict(BaseModel):
    """A gate's outcome in words: `not gated` is neither a pass nor a failure (the comparison was not made)."""

    status: GateStatus
    detail: str

    @property
    def passed(self) -> bool:
        """Whether the gate lets the model through (a comparison not made does not block it)."""
        return self.status is not GateStatus.failed

    def tag(self) -> str:
        return f"{self.status.value}: {self.detail}"


class ModelCard(BaseModel):
    schema_version: Literal[1] = 1
    model_id: str
    feature_set: str
    feature_set_version: str
    inputs: list[ModelInput]
    encodings: Encodings
    data_start: datetime
    data_end: datetime
    lists: int
    rows: int
    dataset_digest: str
    sources: dict[str, int] = Field(default_factory=dict, description="lists built per source")
    positive_lists: dict[str, int] = Field(
        default_factory=dict, description="of those, lists with a positive (trained on), per source"
    )
    position_aware: bool = False
    dropped_families: list[str] = Field(
        default_factory=list, description="left out: the validation ranked better without"
    )
    fallback: Literal["first_stage", "rule_based"] = "first_stage"
    fallback_reason: str = ""
    gates: dict[str, GateVerdict] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    code_version: str = "unknown"
    trained_at: datetime

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def window(self) -> str:
        return f"{self.data_start} .. {self.data_end}"
