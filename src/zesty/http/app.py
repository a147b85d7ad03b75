"""The application factory: settings + model references -> a FastAPI app."""

from __future__ import annotations

import itertools
import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zesty import __version__, context
from zesty.http import hf, openai, openai_generation, ops, tei, tgi
from zesty.http.admission import AdmissionMiddleware
from zesty.http.auth import AuthMiddleware, CORSMiddleware, cors_middleware_options
from zesty.http.deps import State
from zesty.http.errors import install_error_handlers, scope_error_response
from zesty.http.fast_path import HANDLERS as FAST_HANDLERS
from zesty.http.fast_path import FastPathMiddleware
from zesty.http.metrics import Metrics
from zesty.http.strict import BodyLimitMiddleware
from zesty.models.reference import ModelSpec
from zesty.serving.admission import Admission
from zesty.serving.cache import LRUCache, ResponseCache
from zesty.serving.compute import ComputePool
from zesty.serving.manager import ModelManager
from zesty.serving.model import ServedModel
from zesty.settings import Settings

log = logging.getLogger(__name__)


def request_ids():
    """Fresh request ids: a random per-process prefix and a counter, as 32 hex digits like a
    uuid4's. `uuid.uuid4()` reads the OS's random source on every call, ~2% of the event
    loop's time under load."""
    prefix = os.urandom(8).hex()
    return (f"{prefix}{n:016x}" for n in itertools.count(1))


class TelemetryMiddleware:
    """Request ids (an incoming `x-request-id` is kept), the request context (for logs and
    labels) and per-route request metrics labelled by model and task."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._ids = request_ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming[:128] if incoming.isprintable() and incoming else next(self._ids)
        scope.setdefault("state", {})["request_id"] = request_id
        ctx, token = context.open_request(request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k == b"x-request-id" for k, _ in headers):  # error answers carry it
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.close_request(token)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                path, scope["method"], status, time.perf_counter() - start, ctx.model, ctx.task
            )


def create_app(settings: Settings, specs: list[ModelSpec]) -> FastAPI:
    specs = specs or [ModelSpec.embedded_default()]
    # One compute pool for every model: a worker per core, and forward passes never fight
    # for the same cores (serving/compute.py)
    executor = ComputePool(settings.model.threads)
    metrics = Metrics()
    response_cache = ResponseCache(int(settings.cache.response_cache_size))
    admission = Admission(settings.serving.max_concurrent_requests)

    def prepare(model: ServedModel) -> None:
        """Attach the shared caches and the metrics hooks to a freshly loaded model."""
        model.response_cache = response_cache
        model.batch_observer = metrics.batch_observer(model.model_id)
        if settings.cache.tokenization_cache_size:
            model.tokenizer.cache = LRUCache(
                settings.cache.tokenization_cache_size,
                on_lookup=metrics.cache_lookup(model.model_id, "tokenization"),
            )

    manager = ModelManager(
        specs,
        settings.model,
        settings.batch,
        executor,
        settings.lifecycle,
        prepare=prepare,
        on_loaded=lambda model_id, s: metrics.load_duration.labels(model_id).observe(s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        torch.set_num_threads(settings.model.threads)
        metrics.mark_started()
        manager.start()
        try:
            yield
        finally:
            await manager.close()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="zesty",
        version=__version__,
        description="Fast inference for Hugging Face transformer models: HF Inference API, "
        "OpenAI and TEI routes.",
        lifespan=lifespan,
    )
    app.state.zesty = State(
        settings=settings,
        manager=manager,
        metrics=metrics,
        admission=admission,
        response_cache=response_cache,
    )
    routers = (ops.router, openai.router, openai_generation.router, tei.router, tgi.router)
    # hf first: `POST /` is the hottest route, and routes are matched in order
    for router in (hf.router, *routers):
        app.include_router(router)
    install_error_handlers(app)
    # Added innermost first. A request meets: CORS -> telemetry (request id, metrics) ->
    # API key (401) -> admission (429/503, deadline 504, disconnects) -> body limit (413) ->
    # the fast path for single-text bodies of the hottest routes -> FastAPI's routing.
    post_routes = {
        r.path: r
        for router in (hf.router, tei.router)
        for r in router.routes
        if "POST" in (getattr(r, "methods", None) or ())
    }
    app.add_middleware(
        FastPathMiddleware,
        state=app.state.zesty,
        handlers=FAST_HANDLERS,
        routes={path: post_routes[path] for path in FAST_HANDLERS},
    )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.server.max_payload, on_error=scope_error_response
    )
    app.add_middleware(
        AdmissionMiddleware,
        admission=admission,
        timeout_s=settings.serving.request_timeout,
        metrics=metrics,
        on_error=scope_error_response,
    )
    app.add_middleware(
        AuthMiddleware,
        keys=settings.access.api_key,
        metrics=metrics,
        on_error=scope_error_response,
    )
    app.add_middleware(TelemetryMiddleware, metrics=metrics)
    if settings.access.cors_allow_origin:
        app.add_middleware(
            CORSMiddleware, **cors_middleware_options(settings.access.cors_allow_origin)
        )
    return app
