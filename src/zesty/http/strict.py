"""Reading request bodies safely: a size limit and a strict JSON parser.

Plain FastAPI/Starlette accept any body size, parse `NaN`/`Infinity`/`1e999` into floats
(then fail with a 500 while writing the 422) and pass lone surrogates on to the tokenizer
(a 500 again). Here every body is capped at `--max-payload` before it is read whole, and
JSON is parsed strictly: non-finite numbers, lone surrogates and control characters other
than tab/newline/carriage-return are refused with a 4xx naming the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zesty.errors import PayloadTooLarge

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class JSONRejected(json.JSONDecodeError):
    """Raised for JSON we refuse; FastAPI turns JSONDecodeError into a validation error."""


def _reject_constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not a valid JSON number", name, 0)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRejected(f"number {text[:40]} is out of range", text, 0)
    return value


def has_control_character(text: str) -> re.Match | None:
    """A control character JSON bodies may not carry (all but tab, newline, CR)."""
    return _CONTROL.search(text)


def _check_strings(value: Any, path: str = "body") -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONRejected(
                f"{path} contains a lone surrogate (invalid Unicode)", "", 0
            ) from None
        match = has_control_character(value)
        if match:
            raise JSONRejected(
                f"{path} contains the control character U+{ord(match.group()):04X}", "", 0
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path)
            _check_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{path}[{i}]")


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRejected("body is not valid UTF-8", "", exc.start) from None
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    _check_strings(value)
    return value


class StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictRoute(APIRoute):
    """APIRoute whose handlers see a StrictRequest (FastAPI's documented extension point)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler


class BodyLimitMiddleware:
    """Buffer the request body up to `max_bytes`; beyond that answer 413 without reading on.

    Bodies are also treated as JSON whatever their Content-Type (curl's `-d` sends
    `application/x-www-form-urlencoded`), since every route of ours takes JSON.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, on_error: Callable) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_error = on_error  # (scope, ZestyError) -> ASGI response

    @property
    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is larger than --max-payload ({self.max_bytes} bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.on_error(scope, self.too_large)(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.on_error(scope, self.too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"")
        if body and b"json" not in content_type:
            raw = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=raw + [(b"content-type", b"application/json")])
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
