"""What the stage records of each response, once it is sent: the served list in the served log, its impressions in
the landing zone, the Prometheus series and a log line naming the version and variant that served.

Recorded on the event loop right after the response went out (a background task of the response), so the caller
never waits for it, and without a second thread competing for the GIL with the next request. Nothing here waits
for the disk: the logs are flushed every second by their own threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from serving.interactions import LandingZone
from serving.pipeline import ServedList
from serving.schemas import RerankResponse
from serving.served_log import JsonlLog

log = logging.getLogger("reranker.serving")


class StageMetrics:
    """Prometheus series on BentoML's /metrics (created in the worker, after BentoML set up multiprocess mode)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        self.requests = Counter("reranker_requests", "Rerank responses", ["model_id", "variant", "served_by"],
                                registry=registry)  # fmt: skip
        self.fallbacks = Counter("reranker_fallback_reasons", "Why a response was not the learned ranking",
                                 ["model_id", "reason"], registry=registry)  # fmt: skip
        self.latency = Histogram("reranker_latency_seconds", "Time in the rerank pipeline", ["model_id", "variant"],
                                 buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
                                          0.25, 1.0), registry=registry)  # fmt: skip

    def observe(self, response: RerankResponse, seconds: float) -> None:
        self.requests.labels(response.model_id, response.variant, response.served_by.value).inc()
        self.latency.labels(response.model_id, response.variant).observe(seconds)
        for code in response.reason_codes:
            self.fallbacks.labels(response.model_id, code).inc()


@dataclass
class ServedRecorder:
    served_log: JsonlLog
    landing: LandingZone
    metrics: StageMetrics

    def record(self, response: RerankResponse, served: ServedList, seconds: float) -> None:
        """Record one response (`seconds`: its time in the pipeline). A response that cannot be recorded is logged
        and costs only itself: it has been answered already."""
        try:
            event = served.event()
            self.served_log.write({f"{event.timestamp:%Y-%m-%d}": [event.model_dump_json()]}, sync=False)
            self.landing.append_served(event)
            self.metrics.observe(response, seconds)
            log.info("rerank %s model=%s version=%s variant=%s served_by=%s reasons=%s", response.request_id,
                     response.model_id, response.model_version, response.variant, response.served_by.value,
                     ",".join(response.reason_codes) or "-")  # fmt: skip
        except Exception:
            log.exception("the response %s could not be recorded", response.request_id)

    async def record_after(self, response: RerankResponse, served: ServedList, seconds: float) -> None:
        """`record` as a response's background task, on the event loop (a plain function would go to a pool
        thread)."""
        self.record(response, served, seconds)
