"""Server-sent events, exactly as clients parse them.

Each event is `data: {json}\n\n` (with the space); OpenAI-dialect streams end with
`data: [DONE]` (huggingface_hub stops only on that exact line). Once the 200 has gone out an
error can no longer become an HTTP status: it is sent as a last event
`data: {"error": "...", "error_type": "..."}` — which is why this module, the one place that
writes streams, is also the one place besides `zesty.http.errors` that turns errors into
bodies. The same goes for the request's deadline (`--request-timeout`): a stream still running
past it is cancelled (which cancels its generation) and ends with a `timeout` error event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from zesty import context
from zesty.errors import RequestTimeout, ZestyError
from zesty.http.responses import dumps

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def event(payload: object) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"  # the routes' JSON encoder (UTF-8, compact)


def error_event(exc: BaseException) -> bytes:
    if isinstance(exc, ZestyError):
        return event({"error": exc.message, "error_type": exc.error_type})
    return event({"error": "internal error while generating", "error_type": "internal"})


def sse_response(
    events: AsyncIterator[object], *, done: bool, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """Stream `events` (JSON-able objects); `done`: end with `data: [DONE]`. Past the
    request's deadline (if any) the stream ends with a `timeout` error event."""
    ctx = context.current()
    deadline = ctx.deadline if ctx is not None else None
    timeout_s = ctx.timeout_s if ctx is not None else None

    async def body() -> AsyncIterator[bytes]:
        iterator = aiter(events)
        try:
            while True:
                try:
                    # only the wait for the next event is bounded, never the send
                    async with asyncio.timeout_at(deadline):
                        payload = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    yield error_event(RequestTimeout.after(timeout_s or 0.0))
                    break
                yield event(payload)
        except Exception as exc:  # noqa: BLE001 - after the 200, errors are events
            if not isinstance(exc, ZestyError):
                log.exception("error while streaming")
            yield error_event(exc)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if done:
            yield DONE

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )
