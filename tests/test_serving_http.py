"""The stage over HTTP: a real `bentoml serve` process on loopback."""

import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(stage, lake):
    import httpx

    from flows.demo import running_stage, stage_key

    layout, _, _ = lake
    # a budget no busy machine reaches: these tests check what is served, not how fast (benchmarks do that)
    env = {"RERANKER_HASH_USER_IDS": "false", "RERANKER_BUDGET_MS": "60000", "RERANKER_STORE_TIMEOUT_MS": "60000", "RERANKER_PRELOAD_MODELS": '["serving"]',
           "MLFLOW_TRACKING_URI": layout.mlflow_uri}  # fmt: skip
    headers = stage_key(layout.root, "tests")
    with (
        running_stage(layout.root, env) as base,
        httpx.Client(base_url=base, timeout=120, headers=headers) as client,
    ):
        yield client


def eventually(check, seconds: float = 120.0):
    """Served lists are flushed by a background thread (every second): poll for them."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, StopIteration):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _body(events, **kw):
    docs = list(dict.fromkeys(events["document_id"]))[:20]
    user = events["user_id"].value_counts().index[0]
    return {"model_id": "serving", "user_id": user, "candidates": [{"document_id": d, "score": -i} for i, d in
            enumerate(docs)], **kw}  # fmt: skip


def test_rerank_over_http(server, lake):
    _, events, _ = lake
    resp = server.post("/rerank", json=_body(events, top_n=5, exploration_rate=0.0))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["served_by"] == "learned" and body["variant"] == "champion" and len(body["results"]) == 5
    explained = body["results"][0]["learned_rerank"]
    assert set(explained) == {"personalization_score", "exploration_boost", "user_segment", "user_segment_id",
                              "top_features", "top_feature_contributions"}  # fmt: skip
    assert isinstance(explained["user_segment"], str) and all(":" in t for t in explained["top_features"])

    def logged() -> None:  # the stage's log line of this request names the version and variant that served it
        line = (f"rerank {body['request_id']} model=serving version={body['model_version']} variant=champion "
                "served_by=learned")  # fmt: skip
        assert line in (layout.root / "stage.log").read_text()

    layout, _, _ = lake
    eventually(logged)


def test_unknown_model_is_404_and_malformed_request_is_422_naming_the_field(server, lake):
    _, events, _ = lake
    missing = server.post("/rerank", json=_body(events, model_id="nope"))
    assert missing.status_code == 404 and "not registered" in missing.text
    bad = server.post("/rerank", json=_body(events, top_n=0))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "top_n"
    no_candidates = server.post("/rerank", json={"model_id": "serving", "candidates": []})
    assert no_candidates.status_code == 422 and no_candidates.json()["detail"][0]["loc"][-1] == "candidates"
    unknown_feature = server.post("/rerank", json=_body(events, features=["nope"]))
    assert unknown_feature.status_code == 422 and unknown_feature.json()["detail"]["field"] == "features"
    body = _body(events)
    body["candidates"][1]["features"] = {"colour": 1.0}
    undeclared = server.post("/rerank", json=body)
    assert undeclared.status_code == 422 and undeclared.json()["detail"]["field"] == "candidates[1].features"
    assert "colour" in undeclared.json()["detail"]["message"]


def test_operational_endpoints(server, lake):
    _, events, _ = lake
    server.post("/rerank", json=_body(events))
    server.post("/rerank", json=_body(events, user_id="never-seen"))
    assert server.get("/livez").status_code == 200

    def counted() -> None:  # the metrics are counted with the served lists' records, off the request path
        metrics = server.get("/metrics").text
        assert 'reranker_requests_total{model_id="serving",served_by="learned",variant="champion"}' in metrics
        assert 'reranker_fallback_reasons_total{model_id="serving",reason="cold_start_user"}' in metrics
        assert "reranker_latency_seconds_bucket" in metrics

    eventually(counted)
    assert "/rerank" in server.get("/openapi.json").json()["paths"]


def test_served_lists_are_logged_to_the_lake(server, lake):
    import json

    layout, events, _ = lake
    resp = server.post("/rerank", json=_body(events, top_n=3))
    request_id = resp.json()["request_id"]

    def logged_list():
        files = (layout.served).rglob("*.jsonl")
        lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        return next(e for e in lines if e["request_id"] == request_id)

    logged = eventually(logged_list)
    assert len(logged["items"]) == 3 and all(0 < i["propensity"] <= 1 for i in logged["items"])


def test_interactions_land_for_training_and_update_the_online_store(server, lake, tmp_path):
    from expectations.ingest import ingest
    from models.lists import logged_lists
    from reranker.lake import read_interactions
    from reranker.settings import Layout

    layout, events, store = lake
    user = events["user_id"].value_counts().index[0]

    def online_count() -> tuple[float, float]:
        refs = ["user_activity:events", "user_activity:positives"]
        got = store.get_online_features(features=refs, entity_rows=[{"user_id": user}]).to_dict()
        return float(got["events"][0]), float(got["positives"][0])

    before = online_count()
    body = _body(events, top_n=5, context={"device": "mobile"})
    for candidate in body["candidates"]:
        candidate["features"] = {"in_stock": 1.0}
    served = server.post("/rerank", json=body).json()
    clicked = served["results"][1]["document_id"]
    click = {"event_id": f"{served['request_id']}-click", "request_id": served["request_id"],
             "interaction_type": "click", "user_id": user, "document_id": clicked, "position": 1,
             "timestamp": "2026-06-01T12:00:05Z"}  # fmt: skip
    receipt = server.post("/interactions", json={"events": [click]})
    assert receipt.status_code == 202 and receipt.json() == {
        "accepted": 1,
        "users_updated": 1,
        "ignored_opted_out": 0,
    }
    assert online_count() == (before[0] + 1, before[1] + 1)  # one more event, and a positive one

    bad = server.post("/interactions", json={"events": [{**click, "position": -1}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "position"

    def impressions_landed():
        text = "".join(f.read_text() for f in (layout.landing).rglob("*.jsonl"))
        assert f"{served['request_id']}-4-impression" in text

    eventually(impressions_landed)
    target = Layout(tmp_path / "data")
    summary = ingest(layout.landing, target, salt="s", hash_ids=False)
    assert summary.quarantined == 0 and summary.added >= 6
    assert ingest(layout.landing, target, salt="s", hash_ids=False).added == 0  # idempotent
    lists = logged_lists(read_interactions(target.interactions))
    mine = lists[lists["list_id"] == served["request_id"]]
    assert len(mine) == 5 and set(mine["user_id"]) == {user}
    assert set(mine["features_json"]) == {'{"in_stock": 1.0}'} and set(mine["context_json"]) == {
        '{"device": "mobile"}'
    }
    assert mine.set_index("document_id").loc[clicked, "label"] == 1.0
    # the next training reads the caller's first-stage score, never the served model's own
    sent = {c["document_id"]: c["score"] for c in body["candidates"]}
    assert (mine["first_stage_score"] == mine["document_id"].map(sent)).all()
    assert mine["propensity"].between(0, 1, inclusive="right").all()


def test_every_route_but_health_needs_a_key_with_its_scope(server, lake):
    import httpx

    from reranker.access import KeyStore, Scope

    layout, events, _ = lake
    base = str(server.base_url)
    bare = httpx.Client(base_url=base, timeout=120)
    for path in ("/livez", "/readyz"):
        assert bare.get(path).status_code == 200
    assert bare.post("/rerank", json=_body(events)).status_code == 401
    assert bare.post("/interactions", json={"events": []}).status_code == 401
    assert bare.get("/metrics").status_code == 401
    wrong = bare.post("/rerank", json=_body(events), headers={"authorization": "Bearer rrk_nope_nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"]["field"] == "authorization"
    assert wrong.headers["www-authenticate"] == "Bearer"

    store = KeyStore(layout.keys)
    key, token = store.create("ranker-only", [Scope.rerank], models=["serving"])
    only = {"authorization": f"Bearer {token}"}

    def admitted() -> None:  # the stage re-reads the key file within a second
        assert bare.post("/rerank", json=_body(events), headers=only).status_code == 200

    eventually(admitted)
    assert bare.get("/metrics", headers=only).status_code == 403
    assert bare.post("/interactions", json={"events": []}, headers=only).status_code == 403
    other = bare.post("/rerank", json=_body(events, model_id="other"), headers=only)
    assert other.status_code == 403 and other.json()["detail"]["field"] == "model_id"
    body = _body(events)
    stages = [
        {"stage_type": "sort", "stage_id": "learned_rerank", "parameters": {"model_id": "{{INPUT.model_id}}"}}
    ]
    for model_id, status in (("serving", 200), ("other", 403)):  # checked as the template renders it
        piped = bare.post(
            "/pipeline",
            headers=only,
            json={"inputs": {"model_id": model_id}, "candidates": body["candidates"], "stages": stages},
        )
        assert piped.status_code == status, piped.text
    assert piped.json()["detail"]["field"] == "stages[0].parameters.model_id"
    store.revoke(key.key_id)

    def refused() -> None:
        assert bare.post("/rerank", json=_body(events), headers=only).status_code == 401

    eventually(refused)


def test_interactions_must_name_a_request_served_to_that_user(server, lake):
    _, events, _ = lake
    users = events["user_id"].value_counts().index
    served = server.post("/rerank", json=_body(events, top_n=3)).json()
    click = {"event_id": "forged-1", "request_id": "0" * 32, "interaction_type": "purchase", "user_id": users[0],
             "document_id": served["results"][0]["document_id"], "timestamp": "2026-06-01T12:00:05Z"}  # fmt: skip
    never_served = server.post("/interactions", json={"events": [click]})
    assert (
        never_served.status_code == 422 and never_served.json()["detail"]["field"] == "events[0].request_id"
    )
    someone_else = server.post("/interactions", json={"events": [{**click, "request_id": served["request_id"],
                                                                  "user_id": users[1]}]})  # fmt: skip
    assert someone_else.status_code == 422 and "this user" in someone_else.json()["detail"]["message"]
    missing = server.post("/interactions", json={"events": [{**click, "request_id": None}]})
    assert missing.status_code == 422
    stored_key = server.post("/interactions", json={"events": [{**click, "user_id": "userkey:abc"}]})
    assert stored_key.status_code == 422
    as_stored = server.post("/rerank", json=_body(events, user_id="userkey:abc"))
    assert as_stored.status_code == 422 and as_stored.json()["detail"][0]["loc"][-1] == "user_id"
    flood = [{**click, "event_id": f"flood-{i}", "request_id": served["request_id"]} for i in range(101)]
    replayed = server.post("/interactions", json={"events": flood})
    assert replayed.status_code == 422 and "received its 100" in replayed.json()["detail"]["message"]
    ok = server.post("/interactions", json={"events": flood[:3]})
    assert ok.status_code == 202 and ok.json()["accepted"] == 3


def test_hostile_bodies_get_4xx_and_scores_are_always_numbers(server, lake):
    _, events, _ = lake
    not_utf8 = server.post("/rerank", content=b'{"model_id": "serving", "user_id": "\xff\xfe"}',
                           headers={"content-type": "application/json"})  # fmt: skip
    assert not_utf8.status_code == 422
    huge = server.post("/rerank", content=b"x" * 5_000_000, headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["detail"]["field"] == "body"
    body = _body(events, fallback="first_stage", user_id="never-seen")
    del body["candidates"][2]["score"]
    answered = server.post("/rerank", json=body)
    assert answered.status_code == 200, answered.text
    assert all(isinstance(r["score"], float) for r in answered.json()["results"])
    many = _body(events)
    many["candidates"][0]["features"] = {f"f{i}": 1.0 for i in range(10_000)}
    assert server.post("/rerank", json=many).status_code == 422
    spec = server.get("/openapi.json").json()["paths"]
    assert {"401", "403", "404", "413", "422", "429"} <= set(spec["/rerank"]["post"]["responses"])


def test_pipeline_over_http(server, lake):
    from serving.api_docs import pipeline_examples

    _, events, _ = lake
    body = _body(events)
    user = body.pop("user_id")
    request = {"inputs": {"user_id": user, "query": "red", "model_id": "serving"}, "candidates": body["candidates"],
               "stages": pipeline_examples()["hybrid_personalization"]["stages"]}  # fmt: skip
    got = server.post("/pipeline", json=request)
    assert got.status_code == 200, got.text
    answer = got.json()
    assert [s["stage_id"] for s in answer["stages"]] == ["hybrid_search", "rerank", "learned_rerank", "mmr"]
    assert answer["served_by"] == "learned" and len(answer["results"]) == 10
    bad = dict(request, stages=[{"stage_type": "sort", "stage_id": "mmr", "parameters": {"lambda": 2}}])
    refused = server.post("/pipeline", json=bad)
    assert refused.status_code == 422 and refused.json()["detail"]["field"] == "stages[0].parameters.lambda"
    missing = dict(request, inputs={"user_id": user, "query": "red", "model_id": "nope"})
    assert server.post("/pipeline", json=missing).status_code == 404
    assert server.post("/pipeline", json=request, headers={"authorization": ""}).status_code == 401


@pytest.mark.parametrize(("path", "examples"), [("/rerank", 400), ("/pipeline", 150), ("/interactions", 200)])
def test_generated_requests_get_no_server_error_and_conform_to_the_spec(server, path, examples):
    """schemathesis against the live /openapi.json: bodies valid and invalid by the schema, with the test's key;
    every answer is not a 5xx, has a status the spec lists and a body matching the spec's schema for it."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.openapi import from_url
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    base = str(server.base_url).rstrip("/")
    operation = from_url(f"{base}/openapi.json")[path]["POST"]
    auth = {"authorization": server.headers["authorization"]}
    seen = []

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # a body valid by the schema may still name a model that does not exist (404) or a request id this stage
        # never issued (422): both are documented answers, so "valid data accepted" is not one of the checks
        response = case.call_and_validate(
            base_url=base, headers=auth, excluded_checks=[positive_data_acceptance]
        )
        seen.append(response.status_code)

    check()
    assert len(seen) >= examples // 2 and max(seen) < 500


def test_api_docs_render_offline_from_the_stage_own_assets(server):
    """/docs and BentoML's index page load every script and stylesheet from the stage itself (no CDN), and both specs
    they read define the /rerank request whole, with the README's real example."""
    import json
    import re
    from urllib.parse import urljoin

    from serving.api_docs import RERANK_EXAMPLE

    bare = {"authorization": ""}  # the docs are open: fetched without a key
    for page, spec_path in (("/docs", "/openapi.json"), ("/", "/docs.json")):
        html = server.get(page, headers=bare)
        assert html.status_code == 200, page
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(
            a.endswith(".css") for a in assets
        )
        for asset in assets:
            assert "://" not in asset and not asset.startswith("//"), f"{page} loads {asset} from elsewhere"
            got = server.get(urljoin(f"{server.base_url}{page}", asset), headers=bare)
            assert got.status_code == 200 and len(got.content) > 100, (page, asset, got.status_code)
        spec = server.get(spec_path, headers=bare).json()
        body = spec["paths"]["/rerank"]["post"]["requestBody"]["content"]["application/json"]
        assert {"model_id", "candidates", "top_n"} <= set(body["schema"]["properties"]), spec_path
        assert body["example"] == RERANK_EXAMPLE
        text = json.dumps(spec)
        defined = {f"#/components/schemas/{name}" for name in spec.get("components", {}).get("schemas", {})}
        assert set(re.findall(r'"\$ref": "([^"]+)"', text)) <= defined, (
            f"{spec_path} refers to undefined schemas"
        )
    description = server.get("/openapi.json").json()["paths"]["/rerank"]["post"]["description"]
    assert description.startswith("Rerank 1-1,000 candidates") and "p50" not in description
