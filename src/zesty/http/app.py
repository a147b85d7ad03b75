"""The application factory: settings + model references -> a FastAPI app."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zesty import __version__
from zesty.http import hf, openai, ops, tei
from zesty.http.deps import State
from zesty.http.errors import install_error_handlers, scope_error_response
from zesty.http.metrics import Metrics
from zesty.http.strict import BodyLimitMiddleware
from zesty.models.reference import ModelSpec
from zesty.serving.manager import ModelManager
from zesty.settings import Settings

log = logging.getLogger(__name__)


class TelemetryMiddleware:
    """Request ids (an incoming `x-request-id` is kept) and per-route request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming[:128] if incoming.isprintable() and incoming else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + [
                    (b"x-request-id", request_id.encode("latin-1"))
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(path, scope["method"], status, time.perf_counter() - start)


def create_app(settings: Settings, specs: list[ModelSpec]) -> FastAPI:
    specs = specs or [ModelSpec.embedded_default()]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zesty-compute")
    manager = ModelManager(specs, settings.model, settings.batch, executor)
    metrics = Metrics()

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
    app.state.zesty = State(settings=settings, manager=manager, metrics=metrics)
    for router in (ops.router, openai.router, tei.router, hf.router):
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.server.max_payload, on_error=scope_error_response
    )
    app.add_middleware(TelemetryMiddleware, metrics=metrics)
    return app
