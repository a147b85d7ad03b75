"""Operations routes: /health, /ready, /info, /metrics."""

from __future__ import annotations

import platform

from fastapi import APIRouter, Request
from fastapi.responses import Response

from zesty import __version__
from zesty.errors import ZestyError
from zesty.http.deps import state
from zesty.http.errors import error_response
from zesty.http.responses import JSONResponse
from zesty.http.strict import StrictRoute

router = APIRouter(tags=["Operations"], route_class=StrictRoute)


@router.get("/health", summary="The process is alive")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="Every model is loaded (503 until then, and while shutting down)")
async def ready(request: Request) -> JSONResponse:
    st = state(request)
    manager = st.manager
    if st.admission.draining:
        err = ZestyError("not ready: the server is shutting down")
        err.status_code, err.error_type = 503, "unhealthy"
        return error_response(request.url.path, err)
    if manager.ready:
        return JSONResponse({"status": "ready"})
    pending = [e.spec.served_id for e in manager.entries.values() if e.state != "ready"]
    err = ZestyError(f"not ready: {', '.join(pending)} not loaded")
    err.status_code, err.error_type = 503, "unhealthy"
    return error_response(request.url.path, err)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"zesty": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "tokenizers", "onnxruntime", "fastapi"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


@router.get("/info", summary="Served models, tasks, backend and versions")
async def info(request: Request) -> dict:
    st = state(request)
    return {
        "version": __version__,
        "models": [e.info() for e in st.manager.entries.values()],
        "backend": st.manager.backend,
        "versions": _versions(),
        "settings": st.settings.public(),
    }


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    st = state(request)
    m = st.metrics
    m.models_loaded.set(sum(e.state == "ready" for e in st.manager.entries.values()))
    for model_id, entry in st.manager.entries.items():
        model = entry.model
        m.queue_size.labels(model_id).set(model.queue_size() if model is not None else 0)
    m.cache_bytes.set(st.response_cache.bytes)
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")
