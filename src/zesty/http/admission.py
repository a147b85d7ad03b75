"""AdmissionMiddleware: permits, deadlines and disconnects for inference requests (POST).

- A permit is taken before anything else (the body is not even read): with none left the
  answer is 429 `overloaded` + `Retry-After`, or 503 while the server drains.
- The request runs as a child task with a deadline (`--request-timeout`): past it, if no
  answer has started, the task is cancelled (which drops its queued sequences from the
  batcher) and the caller gets 504 `timeout`. An answer already streaming cannot change its
  status: the deadline goes into the request context and the stream ends itself with a
  `timeout` error event (`zesty.http.sse`).
- Once the body is read, a watcher listens for the client going away; a disconnect before the
  answer cancels the work the same way, so abandoned requests free their capacity at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zesty import context
from zesty.errors import RequestTimeout, ZestyError
from zesty.http.metrics import Metrics
from zesty.serving.admission import Admission


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        timeout_s: float,
        metrics: Metrics,
        on_error: Callable,
    ) -> None:
        self.app = app
        self.admission = admission
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.on_error = on_error  # (scope, ZestyError) -> ASGI response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            self.admission.acquire()
        except ZestyError as exc:
            self.metrics.rejected.labels(
                "overloaded" if exc.status_code == 429 else "shutting_down"
            ).inc()
            await self.on_error(scope, exc)(scope, receive, send)
            return
        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.admission.release(time.perf_counter() - start)
            self.metrics.in_flight.dec()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        started = False
        reason: str | None = None  # why we cancelled the work: "timeout" | "disconnected"
        body_read = False
        gone: asyncio.Future[Message] = loop.create_future()
        watcher: asyncio.Task | None = None
        work: asyncio.Task | None = None

        def stop(why: str) -> None:
            nonlocal reason
            if not started and reason is None and work is not None and not work.done():
                reason = why
                work.cancel()

        async def watch() -> None:
            message = await receive()
            while message["type"] != "http.disconnect":  # pragma: no cover - no more body
                message = await receive()
            if not gone.done():
                gone.set_result(message)
            stop("disconnected")

        async def guarded_receive() -> Message:
            nonlocal body_read, watcher
            if body_read:  # the app listens past its body: hand it the watcher's news
                return await asyncio.shield(gone)
            message = await receive()
            if message["type"] == "http.disconnect":
                stop("disconnected")
            elif not message.get("more_body", False):
                body_read = True
                watcher = loop.create_task(watch())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        ctx = context.current()
        if ctx is not None:
            ctx.deadline, ctx.timeout_s = loop.time() + self.timeout_s, self.timeout_s
        work = loop.create_task(self.app(scope, guarded_receive, guarded_send))
        deadline = loop.call_later(self.timeout_s, stop, "timeout")
        try:
            await work
        except asyncio.CancelledError:
            if reason is None or not work.cancelled():
                raise  # the server itself is cancelling us
            self.metrics.rejected.labels(reason).inc()
            if reason == "timeout":
                err = RequestTimeout.after(self.timeout_s)
                await self.on_error(scope, err)(scope, receive, send)
        finally:
            deadline.cancel()
            if watcher is not None:
                watcher.cancel()
            if not work.done():
                work.cancel()
