"""API keys (`Authorization: Bearer <key>`) and CORS.

With one or more `--api-key`s, every route except the probes (`/health`, `/ready`) and CORS
preflight requests needs one of them. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, against every configured key (no early exit), so the time taken does
not depend on how much of a key was right. A refusal is a 401 in the route's error dialect.
CORS is off unless `--cors-allow-origin` is given; preflight then allows `Authorization`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from zesty.errors import Unauthorized
from zesty.http.metrics import Metrics

OPEN_PATHS = frozenset({"/health", "/ready"})

#: request headers a browser client may send, and response headers it may read
ALLOWED_HEADERS = [
    "authorization",
    "content-type",
    "x-request-id",
    "x-use-cache",
    "x-wait-for-model",
]
EXPOSED_HEADERS = [
    "x-request-id",
    "x-cache",
    "x-compute-time",
    "x-queue-time",
    "x-inference-time",
    "x-tokenization-time",
    "x-compute-tokens",
    "retry-after",
]


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def is_preflight(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    return (
        scope["method"] == "OPTIONS"
        and b"origin" in headers
        and b"access-control-request-method" in headers
    )


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str], metrics: Metrics, on_error: Callable) -> None:
        self.app = app
        self._digests = [_digest(k.encode("utf-8")) for k in keys]
        self.metrics = metrics
        self.on_error = on_error  # (scope, ZestyError) -> ASGI response

    def authorized(self, header: bytes | None) -> bool:
        if not header or header[:7].lower() != b"bearer ":
            return False
        given = _digest(header[7:].strip())
        matches = [hmac.compare_digest(given, d) for d in self._digests]  # all, no short cut
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self._digests
            or scope["path"] in OPEN_PATHS
            or is_preflight(scope)
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        self.metrics.rejected.labels("unauthorized").inc()
        err = Unauthorized(
            "a valid API key is required: send 'Authorization: Bearer <key>'"
            if not header
            else "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await self.on_error(scope, err)(scope, receive, send)


def cors_middleware_options(origins: list[str]) -> dict[str, object]:
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ALLOWED_HEADERS,
        "expose_headers": EXPOSED_HEADERS,
        "max_age": 600,
    }


__all__ = ["AuthMiddleware", "CORSMiddleware", "cors_middleware_options", "OPEN_PATHS"]
