"""The hottest request shape, answered without the framework's routing.

`POST /` and `POST /embed` with the body `{"inputs": "<one text>"}` (what
`InferenceClient.feature_extraction`, TEI clients and most load tests send) go straight from
this ASGI layer to the same code the routes run (`hf.infer`, `tei.embed_texts`): no route
matching, no request object, no dependency solving, no second JSON parse. Under load at 32
clients FastAPI's part of that cost about 40% of the event loop's CPU per request (py-spy,
all-MiniLM-L6-v2; docs/serving.md). The layer sits inside every middleware (telemetry, API
keys, admission, body limit), so a request here is counted, authorized, admitted, timed out
and size-limited exactly like any other.

Anything else - another field, a list of texts, a body that is not strict JSON (non-finite
numbers, lone surrogates, control characters), query parameters, a content type FastAPI
would not read as JSON - is replayed untouched to
the routes, which validate it and answer in the documented shapes. The fast path accepts only
bodies the routes would accept with every field at its default, so both ways give the same
answer and the same headers (tests/integration/test_fast_path.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zesty.errors import ZestyError
from zesty.http.deps import State, use_cache_allowed
from zesty.http.errors import error_response, internal_error
from zesty.http.hf import HFRequest, infer
from zesty.http.strict import has_control_character
from zesty.http.tei import EmbedRequest, embed_texts

#: (state, text, headers) -> the route's response
Handler = Callable[[State, str, dict[bytes, bytes]], Awaitable[Response]]


def single_text(body: bytes) -> str | None:
    """The text of a `{"inputs": "<text>"}` body; None for any other body."""
    try:
        data = orjson.loads(body)  # refuses invalid UTF-8, lone surrogates, NaN, 1e999
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or len(data) != 1:
        return None
    text = data.get("inputs")
    if type(text) is not str or has_control_character(text):
        return None
    return text


class FastPathMiddleware:
    """Answers the single-text shape of a few POST routes directly (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        state: State,
        handlers: dict[str, Handler],
        routes: dict[str, BaseRoute],
    ) -> None:
        self.app = app
        self.state = state
        self.handlers = handlers
        self.routes = routes  # path -> the route object, for the telemetry's route label
        self.answered = 0  # requests answered here (tests, debugging)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if (
            handler is None
            or scope["method"] != "POST"
            or scope.get("query_string")
            or not _json_content(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        message = await receive()  # BodyLimitMiddleware has buffered the whole body
        text = None
        if message["type"] == "http.request" and not message.get("more_body", False):
            text = single_text(message.get("body", b""))
        if text is None:
            await self.app(scope, _replay(message, receive), send)
            return
        self.answered += 1
        scope["route"] = self.routes[scope["path"]]
        try:
            response = await handler(self.state, text, _first_headers(scope["headers"]))
        except ZestyError as exc:
            response = error_response(scope["path"], exc)
        except Exception:  # noqa: BLE001 - answered like the routes' catch-all handler
            response = internal_error(
                "POST", scope["path"], scope.get("state", {}).get("request_id")
            )
        await response(scope, receive, send)


def _json_content(headers: list) -> bool:
    """A JSON content type, as FastAPI reads a body as JSON: `application/json` or
    `application/<x>+json` (BodyLimitMiddleware has set one when a body came without)."""
    for key, value in headers:
        if key == b"content-type":
            main = value.split(b";", 1)[0].strip().lower()
            return main == b"application/json" or (
                main.startswith(b"application/") and main.endswith(b"+json")
            )
    return False


def _first_headers(headers: list) -> dict[bytes, bytes]:
    """Headers by name, the first of repeated ones winning (as FastAPI's `Header()`)."""
    out: dict[bytes, bytes] = {}
    for key, value in headers:
        out.setdefault(key, value)
    return out


def _replay(first: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def hf_root(st: State, text: str, headers: dict[bytes, bytes]) -> Response:
    wait = headers.get(b"x-wait-for-model")
    return await infer(
        st,
        None,
        None,
        HFRequest(inputs=text),
        wait.decode("latin-1") if wait is not None else None,
        _use_cache(headers),
    )


async def tei_embed(st: State, text: str, headers: dict[bytes, bytes]) -> Response:
    return await embed_texts(st, EmbedRequest(inputs=text), _use_cache(headers))


def _use_cache(headers: dict[bytes, bytes]) -> bool:
    value = headers.get(b"x-use-cache")
    return use_cache_allowed(value.decode("latin-1") if value is not None else None)


HANDLERS: dict[str, Handler] = {"/": hf_root, "/embed": tei_embed}
