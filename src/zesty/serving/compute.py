"""The compute pool: one worker thread per physical core, shared by every model.

A job is *wide* or *narrow*. A wide job may use every core (a multi-threaded ONNX Runtime
session, a torch forward, a generation step) and runs alone. A narrow job uses one core (a
single-threaded session) and runs beside other narrow jobs, one per core. The encoder batcher
runs a batch wide when it is the only work (lowest latency) and narrow when work is waiting
behind it (throughput), so on a loaded server each core runs its own batch: no barrier between
threads inside one forward pass, and when the event loop takes a core for a moment only one
batch slows down instead of every parallel section of every batch waiting for that core.
Measured on the 2-core machine, MiniLM int8, batches of 16 of 8-64 tokens
(`benchmarks/compute_lanes.py`): two narrow lanes beat one wide spinning session with a
competing process on the cores, and match it alone; docs/serving.md has the numbers.

Two models never fight for the same cores: a wide job waits until every core is free. Jobs
take cores in the order they arrived (a narrow job never overtakes a waiting wide one, nor a
wide job a waiting narrow one), so neither kind starves, whatever the number of cores.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any


class ComputePool(Executor):
    """An executor whose `submit` runs a wide job; `submit_narrow` runs a one-core job."""

    def __init__(self, cores: int) -> None:
        self.cores = max(1, int(cores))
        self._pool = ThreadPoolExecutor(self.cores, thread_name_prefix="zesty-compute")
        self._cond = threading.Condition()
        self._free = self.cores  # cores not held by a running job
        self._waiting: deque[object] = deque()  # tickets of jobs waiting for cores, in order

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(self._hold, self.cores, fn, args, kwargs)

    def submit_narrow(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(self._hold, 1, fn, args, kwargs)

    @property
    def busy(self) -> bool:
        """Some job holds a core right now (read without the lock: a hint for scheduling)."""
        return self._free < self.cores or bool(self._waiting)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _hold(self, width: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            self._cond.wait_for(lambda: self._waiting[0] is ticket and self._free >= width)
            self._waiting.popleft()
            self._free -= width
            self._cond.notify_all()  # the next in line may fit beside this job
        try:
            return fn(*args, **kwargs)
        finally:
            with self._cond:
                self._free += width
                self._cond.notify_all()
