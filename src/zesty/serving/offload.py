"""Small blocking calls run off the event loop, many per thread hop.

Every request makes two short blocking calls: tokenization before its forward pass and
postprocessing (pooling, softmax, ...) after it. `asyncio.to_thread` gives each its own hop:
a worker thread woken, a future chained back, the loop woken again - for a call that itself
takes some tens of microseconds. Under load many requests want a hop at the same moment, so
`Offload` queues the calls and one worker runs every call queued so far, keeps taking the
calls that arrive meanwhile, and hands the results back to the loop in one wake-up per round.

Each call runs in its caller's context (request id in logs) and raises its own exceptions;
a call whose caller has left (cancelled) is skipped. Large calls - many texts, long texts -
should not share a worker with everyone's small ones: callers send those through
`asyncio.to_thread` instead (zesty.serving.inference decides).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

_Call = tuple[contextvars.Context, Callable[..., Any], tuple, asyncio.Future]


class Offload:
    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor  # None: the loop's default executor
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._draining = False  # a worker is taking calls
        self.rounds = 0  # rounds of calls run (tests, debugging)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a worker thread; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.append((contextvars.copy_context(), fn, args, future))
            start = not self._draining
            self._draining = True
        if start:
            try:
                job = loop.run_in_executor(self._executor, self._drain)
            except RuntimeError:  # the executor has shut down
                with self._lock:
                    self._draining = False
                    self._pending = [c for c in self._pending if c[3] is not future]
                raise
            job.add_done_callback(self._drain_ended)
        return await future

    def _drain_ended(self, job: asyncio.Future) -> None:
        """A drain that never ran (its executor cancelled it) must not leave the flag set,
        or every later call would queue behind a worker that does not exist."""
        if job.cancelled() or job.exception() is not None:
            with self._lock:
                self._draining = False

    def _drain(self) -> None:
        """On a worker: run queued calls, round after round, until none is left."""
        while True:
            with self._lock:
                calls, self._pending = self._pending, []
                if not calls:
                    self._draining = False
                    return
            done: dict[asyncio.AbstractEventLoop, list] = {}  # results by their caller's loop
            for ctx, fn, args, future in calls:
                if future.cancelled():  # read off the loop: a hint; _deliver re-checks
                    continue
                try:
                    outcome = (future, ctx.run(fn, *args), None)
                except BaseException as exc:  # noqa: BLE001 - handed to its caller
                    outcome = (future, None, exc)
                done.setdefault(future.get_loop(), []).append(outcome)
            self.rounds += 1
            for loop, outcomes in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, outcomes)
                except RuntimeError:  # that loop has closed: nobody waits any more
                    pass


def _deliver(done: list) -> None:
    for future, result, exc in done:
        if future.done():
            continue
        if isinstance(exc, StopIteration):  # a future refuses it; it would strand the rest
            exc = RuntimeError(f"StopIteration raised in an offloaded call: {exc!r}")
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
