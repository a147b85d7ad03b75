"""Bounded caches: tokenized texts (by count) and answers (by bytes, with single flight).

`LRUCache` is a thread-safe least-recently-used map bounded by entries; each model's
tokenizer keeps one (tokenization runs on worker threads). `ResponseCache` keeps task results
bounded by their approximate size in bytes and coalesces identical requests: while the
first one computes, the others wait for its result instead of computing it again. The
computation is its own task, shared by its waiters; when the last waiter leaves (timeout,
disconnect), it is cancelled, so its queued work is dropped as for any other request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

T = TypeVar("T")


class LRUCache(Generic[T]):
    def __init__(self, max_entries: int, on_lookup: Callable[[bool], None] | None = None) -> None:
        self.max_entries = max_entries
        self.on_lookup = on_lookup  # called with hit=True/False (e.g. a metrics counter)
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        if self.on_lookup is not None:
            self.on_lookup(value is not None)
        return value

    def put(self, key: Hashable, value: T) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def approx_size(value: Any) -> int:
    """Bytes a cached result holds, roughly (arrays exactly, containers by their items)."""
    if isinstance(value, np.ndarray):
        return value.nbytes + 112
    if isinstance(value, str):
        return sys.getsizeof(value)
    if isinstance(value, dict):
        return 64 + sum(approx_size(k) + approx_size(v) + 16 for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 56 + sum(approx_size(v) + 8 for v in value)
    return 32


def cache_key(*parts: Any) -> str:
    """A stable digest of JSON-able parts (dict keys sorted, so parameter order never matters)."""
    try:  # orjson: ~10x json.dumps, which was ~2.5% of the event loop under load
        data = orjson.dumps(
            parts, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in a text (a TypeError subclass)
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=20).hexdigest()


@dataclass
class _Flight:
    task: asyncio.Task
    waiters: int = 0


class ResponseCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, key: str) -> tuple[bool, Any]:
        item = self._data.get(key)
        if item is None:
            return False, None
        self._data.move_to_end(key)
        return True, item[0]

    def store(self, key: str, value: Any) -> None:
        size = approx_size(value)
        if not self.enabled or size > self.max_bytes:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._data[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._data.popitem(last=False)
            self.bytes -= dropped

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(value, True) from the cache or a computation already running, else (value, False)."""
        found, value = self.lookup(key)
        if found:
            return value, True
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_task(compute()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._landed(key, task))
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # nobody wants it any more: drop its queued work
            raise
        flight.waiters -= 1
        return result, shared

    def _landed(self, key: str, task: asyncio.Task) -> None:
        if self._flights.get(key) is not None and self._flights[key].task is task:
            del self._flights[key]
        if not task.cancelled() and task.exception() is None:
            self.store(key, task.result())
