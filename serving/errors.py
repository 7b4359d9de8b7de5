"""The stage's request errors, each naming the field at fault (answered 422). Kept apart from the pipeline so that
the service module, which `bentoml serve` also imports in its supervising process, does not load the models'
libraries there."""

from __future__ import annotations


class FieldError(ValueError):
    """A request the stage refuses; `field` is where (e.g. `candidates[1].features`, `events[0].request_id`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownFeatures(FieldError):
    """A request names features the model or the feature set does not know."""


class InteractionRejected(FieldError):
    """A posted interaction the stage does not take (nothing of the batch lands)."""
