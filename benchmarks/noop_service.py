"""The floor for the serving benchmark: BentoML endpoints that parse the same body and do nothing."""

from __future__ import annotations

from typing import Any

import bentoml
from fastapi import FastAPI

app = FastAPI()


@bentoml.service(traffic={"timeout": 10, "concurrency": 64})
@bentoml.asgi_app(app, path="/mounted")
class Noop:
    @bentoml.api
    def rerank(self, model_id: str, candidates: list[dict[str, Any]], user_id: str | None = None,
               top_n: int = 10, exploration_rate: float = 0.1) -> dict[str, Any]:  # fmt: skip
        return {}

    @app.post("/rerank")
    def mounted(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}
