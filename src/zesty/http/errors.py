"""The one place where errors become HTTP responses.

Two dialects, chosen by path:
- HF Inference API / TGI / TEI: `{"error": "...", "error_type": "validation", ...}`;
- OpenAI (`/v1/...`): `{"error": {"message", "type", "param", "code"}}`, validation as 400.
Routes raise `ZestyError`s and never catch; anything unexpected is logged with its traceback
and answered with a 500 that carries no detail beyond the request id.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from zesty.errors import (
    BadRequest,
    InvalidInput,
    MethodNotAllowed,
    RouteNotFound,
    ZestyError,
)
from zesty.http.responses import JSONResponse

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    "validation": "invalid_request_error",
    "payload_too_large": "invalid_request_error",
    "not_found": "invalid_request_error",
    "unauthorized": "authentication_error",
    "overloaded": "rate_limit_error",
}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(path: str, exc: ZestyError, request_id: str | None = None) -> JSONResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    if is_openai_path(path):
        status = 400 if exc.status_code == 422 else exc.status_code
        code = (
            "model_not_found"
            if exc.error_type == "not_found" and exc.param == "model"
            else exc.error_type
        )
        body = {
            "error": {
                "message": exc.message,
                "type": _OPENAI_TYPES.get(exc.error_type, exc.error_type),
                "param": exc.param,
                "code": code,
            }
        }
        return JSONResponse(body, status_code=status, headers=headers)
    body = {"error": exc.message, "error_type": exc.error_type, **exc.extra()}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def scope_error_response(scope: Scope, exc: ZestyError) -> JSONResponse:
    """For ASGI middleware that answers before routing."""
    return error_response(scope.get("path", ""), exc)


def internal_error(method: str, path: str, request_id: str | None) -> JSONResponse:
    """A 500 for an unexpected exception (call it in the `except`): logged with its
    traceback, answered with no detail beyond the request id."""
    log.exception("unhandled error on %s %s", method, path)
    err = ZestyError(f"internal error (request id {request_id or 'unknown'})")
    return error_response(path, err, request_id)


def _validation_message(exc: RequestValidationError) -> ZestyError:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "malformed JSON")
            return BadRequest(f"invalid JSON body: {detail}", param="body")
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        msg = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "field required"
        parts.append(f"{where}: {msg}")
    return InvalidInput("; ".join(parts) or "invalid request", param=None)


def install_error_handlers(app: FastAPI) -> None:
    def rid(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    @app.exception_handler(ZestyError)
    async def _zesty(request: Request, exc: ZestyError) -> JSONResponse:
        return error_response(request.url.path, exc, rid(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, _validation_message(exc), rid(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: ZestyError = RouteNotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
        else:
            err = ZestyError(str(exc.detail))
            err.status_code = exc.status_code
            err.error_type = "validation" if 400 <= exc.status_code < 500 else "internal"
        return error_response(request.url.path, err, rid(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.method, request.url.path, rid(request))
