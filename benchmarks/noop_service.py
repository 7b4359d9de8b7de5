"""The floor for the serving benchmark: BentoML endpoints that parse the same body and do nothing."""

from __future__ import annotations

from typing import Any

import bentoml
from fastapi import FastAPI, Request, Response

from serving.request_body import parse_rerank_request
from serving.schemas import (
    FeatureContribution,
    LearnedRerank,
    RerankResponse,
    RerankResult,
    ServedBy,
)

app = FastAPI()


@bentoml.service(traffic={"timeout": 10, "concurrency": 64})
@bentoml.asgi_app(app, path="/mounted")
class Noop:
    @bentoml.api
    def rerank(self, model_id: str, candidates: list[dict[str, Any]], user_id: str | None = None,
               top_n: int = 10, exploration_rate: float = 0.1, query: str | None = None,
               context: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        return {}

    @app.post("/rerank")
    def mounted(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}


_CANNED = RerankResponse(
    request_id="0" * 32, model_id="reranker", model_version="1", variant="champion", served_by=ServedBy.learned,
    reason="ok", reason_codes=[],
    results=[RerankResult(document_id=f"d{i}", content=None, score=1.0 - i / 10,
                          learned_rerank=LearnedRerank(
                              personalization_score=0.1, exploration_boost=0.0, user_segment="drama_fan",
                              user_segment_id=1, top_features=[f"f{j}:1-2" for j in range(3)],
                              top_feature_contributions=[FeatureContribution(name=f"f{j}", value="1-2",
                                                                             contribution=0.1) for j in range(3)]))
             for i in range(10)],
).model_dump_json()  # fmt: skip


@app.post("/contract")
async def contract(body: Request) -> Response:
    """The stage's own request validation and a response of the stage's size, and nothing between (a module-level
    async route, as the stage's: no pool-thread hop)."""
    parse_rerank_request(await body.body())
    return Response(_CANNED, media_type="application/json")
