"""The current request, as seen from anywhere below the HTTP layer.

`TelemetryMiddleware` opens a `RequestContext` per request; `run_task` fills in the model,
the task and the cache outcome; the middleware reads them back to label its metrics, and
every log line written while the request runs carries its id (`RequestIdFilter`);
`AdmissionMiddleware` sets the request's deadline, which a stream checks between events. Code
outside a request (model loading, the batch loop) sees `current()` return None.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str
    model: str = ""
    task: str = ""
    cache: str = ""  # "hit" | "miss" | "" (no response cache involved)
    deadline: float | None = None  # event-loop time past which the request times out
    timeout_s: float | None = None  # the --request-timeout that set it (for the message)


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "zesty_request", default=None
)


def current() -> RequestContext | None:
    return _current.get()


def open_request(request_id: str) -> tuple[RequestContext, contextvars.Token]:
    ctx = RequestContext(request_id)
    return ctx, _current.set(ctx)


def close_request(token: contextvars.Token) -> None:
    _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` ("-" outside a request) for the log formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        record.request_id = ctx.request_id if ctx is not None else "-"
        return True
