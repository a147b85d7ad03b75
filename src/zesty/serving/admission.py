"""Admission: a bounded number of requests in the server, decided in O(1) before any work.

A request takes a permit when it arrives (before its body is read or tokenized) and gives it
back when its answer is sent. With every permit taken the answer is an immediate 429
`overloaded` with a `Retry-After` estimated from recent request durations; while the server
drains for shutdown it is 503. `wait_idle` lets the shutdown wait for in-flight work.
"""

from __future__ import annotations

import asyncio
import math

from zesty.errors import Overloaded, ShuttingDown


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.draining = False
        self._avg_s = 1.0  # moving average of admitted requests' durations
        self._idle: asyncio.Event | None = None

    def acquire(self) -> None:
        """Take a permit or raise (never waits)."""
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"Model is overloaded: {self.in_flight} requests in progress "
                f"(--max-concurrent-requests {self.limit})",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def release(self, seconds: float) -> None:
        self.in_flight -= 1
        self._avg_s = 0.9 * self._avg_s + 0.1 * seconds
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def retry_after(self) -> int:
        """Whole seconds after which a permit is likely free (at least 1)."""
        return max(1, math.ceil(self._avg_s))

    def begin_drain(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight (True) or `timeout` passes (False)."""
        if self.in_flight == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
