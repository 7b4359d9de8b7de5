"""What the stage records of a response once it is sent: the served list, its impressions, the metrics and the log
line; a response that cannot be recorded costs only itself."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from serving.interactions import LandingZone
from serving.pipeline import ServedList
from serving.recording import ServedRecorder, StageMetrics
from serving.schemas import RerankResponse, ServedBy
from serving.served_log import JsonlLog


def _response(request_id: str, documents: list[str]) -> tuple[RerankResponse, ServedList]:
    response = RerankResponse.model_validate({
        "request_id": request_id, "model_id": "m", "model_version": "3", "variant": "canary",
        "served_by": ServedBy.learned, "reason": "ok", "reason_codes": [],
        "results": [{"document_id": d, "content": None, "score": 1.0 - i,
                     "learned_rerank": {"personalization_score": 0.0, "exploration_boost": 0.0, "user_segment": None,
                                        "top_features": []}} for i, d in enumerate(documents)],
    })  # fmt: skip
    served = ServedList(request_id, "u1", None, "m", "3", "canary", "learned", datetime(2026, 1, 2, tzinfo=UTC),
                        0.1, 5, response.results, [0.9] * len(documents))  # fmt: skip
    return response, served


def test_a_response_is_recorded_and_a_broken_one_costs_only_itself(tmp_path, caplog):
    served_log, landing = JsonlLog(tmp_path / "served", "served"), LandingZone(tmp_path / "incoming")
    registry = CollectorRegistry()
    recorder = ServedRecorder(served_log, landing, StageMetrics(registry))
    good, served = _response("r1", ["a", "b"])
    broken, broken_served = _response("r2", ["c"])
    broken_served = ServedList(**{**vars(broken_served), "propensities": []})  # cannot be made into its event
    with caplog.at_level(logging.INFO, logger="reranker.serving"):
        recorder.record(broken, broken_served, 0.002)
        recorder.record(good, served, 0.002)
    served_log.close()
    landing.log.close()
    assert "the response r2 could not be recorded" in caplog.text
    assert "rerank r1 model=m version=3 variant=canary served_by=learned" in caplog.text
    logged = [
        json.loads(line)
        for f in (tmp_path / "served").rglob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert [e["request_id"] for e in logged] == ["r1"] and [i["document_id"] for i in logged[0]["items"]] == [
        "a",
        "b",
    ]
    impressions = [
        json.loads(line)
        for f in (tmp_path / "incoming").rglob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert sorted(e["event_id"] for e in impressions) == ["r1-0-impression", "r1-1-impression"]
    assert (
        registry.get_sample_value(
            "reranker_requests_total", {"model_id": "m", "variant": "canary", "served_by": "learned"}
        )
        == 1
    )
