"""The stage over HTTP: a real `bentoml serve` process on loopback."""

import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(stage, lake):
    import httpx

    from flows.demo import running_stage

    layout, _, _ = lake
    env = {"RERANKER_HASH_USER_IDS": "false", "RERANKER_PRELOAD_MODELS": '["serving"]',
           "MLFLOW_TRACKING_URI": layout.mlflow_uri}  # fmt: skip
    with running_stage(layout.root, env) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def eventually(check, seconds: float = 10.0):
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
    assert set(body["results"][0]["learned_rerank"]) == {"personalization_score", "exploration_boost",
                                                         "user_segment", "top_features"}  # fmt: skip

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
    assert receipt.status_code == 202 and receipt.json() == {"accepted": 1, "users_updated": 1}
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
    assert mine["propensity"].between(0, 1, inclusive="right").all()
