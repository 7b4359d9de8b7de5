"""The stage's HTTP contract where the route reads the body itself: FastAPI's 422 and a documented request body."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError

from serving.request_body import parse_rerank_request
from serving.schemas import RerankRequest
from serving.service import app


def body(**overrides: object) -> bytes:
    request = {"model_id": "m", "user_id": "u", "candidates": [{"document_id": "d1", "score": 1.0}]}
    return json.dumps({**request, **overrides}).encode()


def test_a_valid_body_parses_as_fastapi_would():
    assert parse_rerank_request(body(top_n=3)) == RerankRequest.model_validate(json.loads(body(top_n=3)))


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (body(top_n=0), ("body", "top_n")),
        (body(exploration_rate=1.5), ("body", "exploration_rate")),
        (body(candidates=[{"score": 1.0}]), ("body", "candidates", 0, "document_id")),
        (json.dumps({"candidates": []}).encode(), ("body", "model_id")),
        (b"{not json", ("body",)),  # the body itself is at fault
    ],
)
def test_a_malformed_body_is_fastapis_422_naming_the_field(raw, loc):
    with pytest.raises(RequestValidationError) as caught:
        parse_rerank_request(raw)
    assert loc in [tuple(error["loc"]) for error in caught.value.errors()]


def test_the_openapi_spec_documents_the_request_body_whole():
    """The route reads its body itself, so the spec carries the request schema inline (no reference to resolve):
    FastAPI's spec and BentoML's own (which rebuilds one from the routes) both show it, with the example."""
    from fastapi.openapi.utils import get_openapi

    from serving.api_docs import RERANK_EXAMPLE

    spec = app.openapi()
    for built in (
        spec,
        get_openapi(title=app.title, version=app.version, routes=app.routes),
    ):  # BentoML's way
        body = built["paths"]["/rerank"]["post"]["requestBody"]["content"]["application/json"]
        request = body["schema"]
        assert {"model_id", "candidates", "top_n", "exploration_rate", "fallback"} <= set(
            request["properties"]
        )
        assert "document_id" in request["properties"]["candidates"]["items"]["properties"]
        assert _refs(request) == [] and body["example"] == RERANK_EXAMPLE
        assert RerankRequest.model_validate(body["example"])  # the example is a valid request
    assert [
        r for r in _refs(spec) if r not in spec["components"]["schemas"]
    ] == []  # every reference resolves


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []
