"""The stage's API documentation, complete and offline: the user-facing descriptions, realistic examples (the
README's real output after quickstart), the /rerank request schema inlined (the route reads its body itself, so
neither FastAPI nor BentoML's own spec would otherwise define it), and a Swagger UI page whose assets the stage
serves itself (BentoML, a package from the registry, bundles them under /static_content) - no CDN.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

DESCRIPTION = """\
Reranks the candidates of a first stage for one user, with the learned model registered in MLflow under
`model_id` (its `champion`, or its `canary` for a share of traffic), and records what it served so the next
training learns from it.

* **Authentication:** `Authorization: Bearer rrk_…` (`reranker keys create`). Scopes: `rerank`, `interactions`,
  `metrics`, `admin`. `/livez`, `/readyz` and these docs are open.
* **Which path served a response** is always said: `served_by` is `learned`, `fallback` (unknown or cold-start user,
  personalization opted out, the model unable to score) or `unranked` (the time budget ran out: the candidates in
  the caller's order), with `reason` and `reason_codes`.
* **Errors** answer with the field at fault: `{"detail": {"field": …, "message": …}}` (422 from validation lists
  every field under `detail`).
* **Clicks back:** post them to `POST /interactions` with the `request_id` of the response that showed the item.
"""

RERANK_DESCRIPTION = """\
Rerank 1-1,000 candidates for `user_id` and return the best `top_n`, each with its score and why
(`learned_rerank`: personalization score, exploration boost, user segment and the inputs that moved it most).
Candidate `features` and request `features` must be declared in the model's feature set (unknown names: 422, or
ignored with `unknown_features: "ignore"`); missing ones are ranked with what is available."""

PIPELINE_DESCRIPTION = """\
Run the seed's stages over the candidates you send: `stages` is a list of `{stage_type, stage_id, parameters}`
(`structured_filter`, `rerank` (BM25/TF-IDF), `learned_rerank` (as POST /rerank), `mmr`, `business_rules`;
`semantic_search` / `hybrid_search` stand for your own retrieval, whose results are the `candidates`), parameters
may name `inputs` as `{{INPUT.name}}`. Conditions address a candidate's `document_id`, `content`, `score`,
`features.<name>` and `metadata.<name>` (sent, else the catalog's). Business rules (pin, boost, bury, cap) apply after
the last sort stage and before exploration; the response reports each stage (`stages`: candidates in and out, time)
and each rule's effect (`rules`), and each result the rules that placed it."""

INTERACTIONS_DESCRIPTION = """\
Land interaction events (clicks, purchases, …) for the next training and update the users' online counts at once.
Each event names the `request_id` of a list the stage served to the same user (at most 30 days ago by default); a
batch with one that does not is refused whole, with 422 naming the event."""

RERANK_EXAMPLE = {
    "model_id": "reranker",
    "user_id": "ml196",
    "query": "friday night",
    "top_n": 3,
    "exploration_rate": 0.1,
    "candidates": [
        {"document_id": "m50", "content": "Star Wars (1977)", "score": 0.91},
        {"document_id": "m100", "content": "Fargo (1996)", "score": 0.88},
        {"document_id": "m181", "content": "Return of the Jedi (1983)", "score": 0.85},
        {"document_id": "m258", "content": "Contact (1997)", "score": 0.80},
        {"document_id": "m286", "content": "The English Patient (1996)", "score": 0.78},
    ],
}

RERANK_RESPONSE_EXAMPLE = {
    "request_id": "6b0e3df7c00d909ce97daff1083bb30d",
    "model_id": "reranker",
    "model_version": "1",
    "variant": "champion",
    "served_by": "learned",
    "reason": "ok",
    "reason_codes": [],
    "results": [
        {"document_id": "m286", "content": "The English Patient (1996)", "score": 0.1277,
         "learned_rerank": {"personalization_score": 0.46, "exploration_boost": 0.0, "user_segment": "drama_fan",
                            "user_segment_id": 4,
                            "top_features": ["factor_dot:0.2-0.5", "first_stage_rank:4-5", "positives_30d_share:5-10"],
                            "top_feature_contributions": [
                                {"name": "collaborative.factor_dot", "value": "0.2-0.5", "contribution": 0.301969},
                                {"name": "first_stage.rank", "value": "4-5", "contribution": 0.246852},
                                {"name": "engagement.positives_30d_share", "value": "5-10",
                                 "contribution": 0.189234}]}},
        {"document_id": "m100", "content": "Fargo (1996)", "score": 0.0776,
         "learned_rerank": {"personalization_score": 0.3762, "exploration_boost": 0.0, "user_segment": "drama_fan",
                            "user_segment_id": 4,
                            "top_features": ["factor_dot:0.2-0.5", "first_stage_rank:2", "positives_30d_share:5-10"],
                            "top_feature_contributions": [
                                {"name": "collaborative.factor_dot", "value": "0.2-0.5", "contribution": 0.255188}]}},
    ],
}  # fmt: skip

EXAMPLES_DIR = Path(__file__).parent / "examples"


def pipeline_examples() -> dict[str, dict[str, Any]]:
    """The seed's three pipelines (`serving/examples/*.json`): name -> {description, stages}."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))}


PIPELINE_EXAMPLE = {
    "inputs": {
        "query": "wireless headphones",
        "user_id": "u17",
        "model_id": "shop",
        "categories": ["audio"],
        "promoted": "p42",
    },
    "candidates": [
        {
            "document_id": "p42",
            "content": "Acme wireless headphones",
            "score": 0.93,
            "features": {"in_stock": 1},
            "metadata": {"brand": "acme", "in_stock": True, "categories": ["audio"]},
        },
        {
            "document_id": "p7",
            "content": "Zeta over-ear wireless headphones",
            "score": 0.88,
            "features": {"in_stock": 1},
            "metadata": {"brand": "zeta", "in_stock": True, "categories": ["audio"]},
        },
        {
            "document_id": "p19",
            "content": "Acme earbuds",
            "score": 0.71,
            "features": {"in_stock": 0},
            "metadata": {"brand": "acme", "in_stock": False, "categories": ["audio"]},
        },
    ],
    "stages": json.loads((EXAMPLES_DIR / "ecommerce_product_ranking.json").read_text())["stages"],
}

INTERACTIONS_EXAMPLE = {
    "events": [
        {"event_id": "click-1", "request_id": "6b0e3df7c00d909ce97daff1083bb30d", "interaction_type": "click",
         "user_id": "ml196", "document_id": "m100", "position": 0, "timestamp": "2026-11-30T17:20:00Z"}
    ]
}  # fmt: skip

INTERACTIONS_RESPONSE_EXAMPLE = {"accepted": 1, "users_updated": 1, "ignored_opted_out": 0}

ERROR_EXAMPLES = {
    401: {
        "detail": {
            "field": "authorization",
            "message": "a valid API key is required: Authorization: Bearer "
            "rrk_... (create one with `reranker keys create`)",
        }
    },
    403: {"detail": {"field": "authorization", "message": "key k1 lacks the 'rerank' scope"}},
    404: {"detail": {"field": "model_id", "message": "model 'nope' is not registered"}},
    413: {"detail": {"field": "body", "message": "the request body is over 4194304 bytes"}},
    422: {"detail": {"field": "candidates[1].features", "message": "unknown feature names ['colour']"}},
    429: {
        "detail": {"field": "authorization", "message": "key k1 is over its rate of 2000 requests a second"}
    },
    400: {"detail": {"field": "content-length", "message": "not a number"}},
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every `$ref` to its own `$defs` replaced by the definition: a schema that needs
    no components, so every spec that carries the operation (FastAPI's, BentoML's) renders it whole."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = copy.deepcopy(defs[ref.rsplit("/", 1)[1]])
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**target, **rest})
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def request_body(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(model), "example": example}},
    }


def error_responses(models: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, each a JSON body naming the field at fault, with an example."""
    described = {400: "Malformed header", 401: "No valid API key", 403: "The key lacks the scope or the model",
                 404: "Model not registered", 413: "Body over the size limit",
                 422: "Invalid request: the field at fault is named", 429: "Over the key's rate limit"}  # fmt: skip
    return {code: {"model": models, "description": described[code],
                   "content": {"application/json": {"example": ERROR_EXAMPLES[code]}}} for code in codes}  # fmt: skip


def swagger_page(title: str) -> HTMLResponse:
    """Swagger UI from the stage's own /static_content (BentoML's bundled copy): renders with no network."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - API",
                               swagger_js_url="/static_content/swagger-ui-bundle.js",
                               swagger_css_url="/static_content/swagger-ui.css",
                               swagger_favicon_url="/static_content/favicon-light-32x32.png")  # fmt: skip
