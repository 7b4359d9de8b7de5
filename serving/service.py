"""The BentoML service: thin wiring of the rerank pipeline behind POST /rerank.

FastAPI routes mounted on the BentoML service give the contract's exact HTTP semantics (404 for an unknown model,
422 naming the field of a malformed request); BentoML adds /livez, /readyz, /healthz and /metrics.
Start: `reranker serve` or `bentoml serve serving.service:Reranker` (settings from RERANKER_* variables).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import bentoml
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.background import BackgroundTask

from models.pipeline_spec import StageError, resolve
from models.registry import ModelNotFound
from serving import api_docs
from serving.access import StageAccess, api_key_of
from serving.errors import FieldError, InteractionRejected
from serving.request_body import parse_pipeline_request, parse_rerank_request
from serving.schemas import (
    ErrorBody,
    InteractionBatch,
    InteractionReceipt,
    PipelineRequest,
    PipelineResponse,
    RerankRequest,
    RerankResponse,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reranker")
    except PackageNotFoundError:
        return "0"


app = FastAPI(
    title="reranker", description=api_docs.DESCRIPTION, version=_version(), docs_url=None, redoc_url=None
)


def build_pipeline():  # type: ignore[no-untyped-def]
    """Everything the stage needs, from the one settings object (read here, at the entry point)."""
    from feature_repo.store import open_store
    from models.registry import Registry
    from reranker.access import KeyRing, KeyStore
    from reranker.settings import Settings, SettingsError, apply_runtime_env
    from serving.interactions import InteractionGuard, InteractionSink, LandingZone, PushLock, RequestCounter
    from serving.model_cache import ModelCache
    from serving.online_features import OnlineFeatures
    from serving.pipeline import RerankPipeline
    from serving.served_log import JsonlLog

    apply_runtime_env()
    settings = Settings()
    layout = settings.layout
    if settings.auth:
        ring = KeyRing(KeyStore(layout.keys))
        ring.refresh()
        if not len(ring):
            raise SettingsError(f"no API key in {layout.keys}: create one with `reranker keys create --name NAME "
                                "--scope rerank --scope interactions` (or set RERANKER_AUTH=false behind a gateway "
                                "that authenticates)")  # fmt: skip
    request_ids = settings.request_ids()  # refuses the public example salt outside dev mode
    features = OnlineFeatures(open_store(layout.feast), layout.feature_tables, user_ttl_seconds=settings.user_cache_seconds,
                              read_timeout=settings.store_timeout_ms / 1000,
                              breaker_seconds=settings.store_breaker_seconds)  # fmt: skip
    features.state()
    models = ModelCache(lambda: Registry(settings.tracking_uri()), lambda: features.manifest,
                        canary_share=settings.canary_share, poll_seconds=settings.alias_poll_seconds,
                        threads=settings.lgbm_threads)  # fmt: skip
    features.on_refresh = lambda state: models.replan()
    models.tasks.append(
        features.refresh
    )  # a new feature build or materialization is picked up by the watcher
    for model_id in settings.preload_models:  # load and warm up before the first caller
        try:
            models.variants(model_id)
        except Exception as exc:  # a missing model is answered 404 later, not a start-up failure
            logging.getLogger("reranker.serving").warning("preload of %s failed: %s", model_id, exc)
    models.start()

    hash_user = settings.user_hasher()
    opted_out = settings.opted_out_users()
    pipeline = RerankPipeline(features, models, hash_user, opted_out=opted_out, budget_ms=settings.budget_ms,
                              request_ids=request_ids, explain_threads=settings.explain_threads)  # fmt: skip
    guard = InteractionGuard(request_ids, RequestCounter(layout.landing / "_request_counts.sqlite",
                                                         settings.max_events_per_request,
                                                         settings.interactions_max_age_days), opted_out)  # fmt: skip
    sink = InteractionSink(LandingZone(layout.landing), features.store, hash_user, PushLock(layout.online_push_lock),
                           lambda: features.manifest, on_user_update=features.invalidate_user, guard=guard)  # fmt: skip
    return pipeline, JsonlLog(layout.served, "served"), sink


log = logging.getLogger("reranker.serving")


def tune_gc(young_threshold: int = 20_000) -> None:
    """The collector for a long-running stage, once the worker has loaded everything it keeps: what exists now
    is frozen (a full collection no longer walks the ~600k objects of the loaded libraries and models: one took
    315 ms, measured in the worker), and a young collection waits for 20,000 net new objects instead of 700 (a
    request allocates ~650 objects that refcounting frees again, so at 700 nearly every request paid a 70 us
    collection for nothing; at 20,000 one in ~1,000 requests pays ~4 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *gc.get_threshold()[1:])


def _workers() -> int:
    """Worker processes, from the settings (this module is the service's entry point)."""
    from reranker.settings import Settings

    return Settings().workers


@bentoml.service(traffic={"timeout": 10, "concurrency": 64}, workers=_workers())
@bentoml.asgi_app(app, path="/")
class Reranker:
    def __init__(self) -> None:
        from reranker.settings import Settings
        from serving.recording import ServedRecorder, StageMetrics
        from serving.stage_pipeline import PipelineRunner

        self.pipeline, self.log, self.sink = build_pipeline()
        self.runner = PipelineRunner(self.pipeline)
        self.preload = list(Settings().preload_models)
        self.recorder = ServedRecorder(self.log, self.sink.landing, StageMetrics())
        # BentoML leaves loggers outside its own at WARNING: the per-request line (version, variant, path) is INFO
        log.setLevel(logging.INFO)
        tune_gc()

    def __is_ready__(self) -> bool:
        """/readyz: ready once every preloaded model is loaded (tried again at each probe while it is not)."""
        models = self.pipeline.models
        for model_id in self.preload:
            if not models.is_loaded(model_id):
                try:
                    models.variants(model_id)
                except Exception:
                    return False
        return True

    @bentoml.on_shutdown
    def flush_logs(self) -> None:
        """Served lists and impressions still queued are written before the worker exits."""
        self.log.close()
        self.sink.landing.log.close()


async def current_stage() -> Reranker:
    """The worker's service instance, for the routes below. An async dependency: BentoML's own injection of `self`
    into class-method routes is a plain function, which FastAPI calls on a pool thread for every request."""
    return bentoml.get_current_service()  # type: ignore[no-any-return]


@app.get("/docs", include_in_schema=False)
async def docs() -> Response:
    """Swagger UI from the stage's own assets: renders with no network."""
    return api_docs.swagger_page(app.title)


Reranker.add_asgi_middleware(StageAccess)  # type: ignore[attr-defined]


_RERANK_RESPONSES = {200: {"content": {"application/json": {"example": api_docs.RERANK_RESPONSE_EXAMPLE}}},
                     **api_docs.error_responses(ErrorBody, 400, 401, 403, 404, 413, 422, 429)}  # fmt: skip


@app.post("/rerank", response_model=RerankResponse, summary="Rerank candidates for a user",
          description=api_docs.RERANK_DESCRIPTION, responses=_RERANK_RESPONSES,
          openapi_extra={"requestBody": api_docs.request_body(RerankRequest, api_docs.RERANK_EXAMPLE)})  # fmt: skip
async def rerank(body: Request, stage: Reranker = Depends(current_stage)) -> Response:
    # With the model loaded, on the event loop rather than a pool thread: the work is CPU-bound under the GIL either
    # way, and the hop cost more than it overlapped (p50 7.0 -> 5.7 ms, p99 under 8 clients 318 -> 80 ms). A model
    # still to load (registry I/O, seconds) is loaded on a pool thread, so the loop keeps serving. The response is
    # serialized once, here (returned as a model, FastAPI would validate it again). What the stage records of the
    # response (`serving.recording`) is done once the response is sent.
    request = parse_rerank_request(await body.body())
    _may_use(body, request.model_id, "model_id")
    pipeline = stage.pipeline
    return await _answer(stage, pipeline.rerank, request, pipeline.models.is_loaded(request.model_id))


def _may_use(body: Request, model_id: str, field: str) -> None:
    """403 when the request's key is limited to other models."""
    key = api_key_of(body.scope)
    if key is not None and not key.allows_model(model_id):
        raise HTTPException(status_code=403, detail={"field": field, "message": f"key {key.key_id} may not use "
                                                     f"model {model_id!r}"})  # fmt: skip


async def _answer(stage: Reranker, call: Any, request: Any, loaded: bool) -> Response:
    """The response of `call(request)` (on the event loop when its model is loaded, else on a pool thread), its
    errors as their statuses with the field at fault, and what it served recorded once it is sent."""
    started = time.perf_counter()
    try:
        response, served = call(request) if loaded else await run_in_threadpool(call, request)
    except ModelNotFound as exc:
        raise HTTPException(status_code=404, detail={"field": "model_id", "message": str(exc)}) from exc
    except (FieldError, StageError) as exc:
        raise HTTPException(status_code=422, detail={"field": exc.field, "message": str(exc)}) from exc
    seconds = time.perf_counter() - started
    return Response(response.model_dump_json(), media_type="application/json",
                    background=BackgroundTask(stage.recorder.record_after, response, served, seconds))  # fmt: skip


_PIPELINE_RESPONSES = {**api_docs.error_responses(ErrorBody, 400, 401, 403, 404, 413, 422, 429)}


@app.post("/pipeline", response_model=PipelineResponse, summary="Run filter and sort stages over candidates",
          description=api_docs.PIPELINE_DESCRIPTION, responses=_PIPELINE_RESPONSES,
          openapi_extra={"requestBody": api_docs.request_body(PipelineRequest, api_docs.PIPELINE_EXAMPLE)})  # fmt: skip
async def pipeline(body: Request, stage: Reranker = Depends(current_stage)) -> Response:
    request = parse_pipeline_request(await body.body())
    try:
        stages = resolve(request.stages, dict(request.inputs))
    except StageError as exc:
        raise HTTPException(status_code=422, detail={"field": exc.field, "message": str(exc)}) from exc
    learned = [(s.index, s.params.model_id) for s in stages if s.stage_id == "learned_rerank"]
    for i, model_id in learned:  # the model ids as the templates rendered them
        _may_use(body, model_id, f"stages[{i}].parameters.model_id")
    loaded = all(stage.pipeline.models.is_loaded(m) for _, m in learned)
    return await _answer(stage, lambda r: stage.runner.run(r, stages), request, loaded)


_INTERACTIONS_RESPONSES = {
    202: {"content": {"application/json": {"example": api_docs.INTERACTIONS_RESPONSE_EXAMPLE}}},
    **api_docs.error_responses(ErrorBody, 400, 401, 403, 413, 422, 429),
}


@app.post("/interactions", response_model=InteractionReceipt, status_code=202, summary="Log clicks, purchases, …",
          description=api_docs.INTERACTIONS_DESCRIPTION, responses=_INTERACTIONS_RESPONSES,
          openapi_extra={"requestBody": {"content": {"application/json": {"example": api_docs.INTERACTIONS_EXAMPLE}}}})  # fmt: skip
def interactions(batch: InteractionBatch, stage: Reranker = Depends(current_stage)) -> InteractionReceipt:
    # On a pool thread: the landing is fsynced before the call returns.
    try:
        return InteractionReceipt(**stage.sink.accept(batch.events))
    except InteractionRejected as exc:
        raise HTTPException(status_code=422, detail={"field": exc.field, "message": str(exc)}) from exc
