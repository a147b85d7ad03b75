"""Caches: LRU by entries, responses by bytes, single flight, cancellation of shared work."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from zesty.serving.cache import LRUCache, ResponseCache, approx_size, cache_key


def test_lru_keeps_the_most_recently_used_and_counts_lookups():
    seen = []
    c: LRUCache[str] = LRUCache(2, on_lookup=seen.append)
    c.put("a", "A")
    c.put("b", "B")
    assert c.get("a") == "A"  # a is now the most recent
    c.put("c", "C")  # evicts b
    assert c.get("b") is None and c.get("a") == "A" and c.get("c") == "C"
    assert len(c) == 2 and seen == [True, False, True, True]
    off: LRUCache[str] = LRUCache(0)
    off.put("a", "A")
    assert off.get("a") is None


def test_keys_ignore_dict_order_but_not_values():
    assert cache_key("m", {"a": 1, "b": 2}) == cache_key("m", {"b": 2, "a": 1})
    assert cache_key("m", {"a": 1}) != cache_key("m", {"a": 2})
    assert cache_key("m", ["x"]) != cache_key("n", ["x"])


def test_keys_take_lone_surrogates_and_non_string_keys():
    # orjson refuses a lone surrogate (a JSON body may carry "\ud800"): the json fallback
    assert cache_key("m", ["a\ud800"]) != cache_key("m", ["a\ud801"])
    assert cache_key("m", ["a\ud800"]) == cache_key("m", ["a\ud800"])
    assert cache_key("m", {1: "x"}) != cache_key("m", {2: "x"})


def test_response_cache_is_bounded_in_bytes():
    vec = np.zeros(256, dtype=np.float32)  # 1 KiB
    size = approx_size(vec)
    cache = ResponseCache(max_bytes=3 * size)
    for i in range(5):
        cache.store(str(i), vec.copy())
    assert len(cache) == 3 and cache.bytes <= 3 * size
    assert not cache.lookup("0")[0] and cache.lookup("4")[0]
    cache.store("big", np.zeros(10_000, dtype=np.float32))  # larger than the budget: not kept
    assert not cache.lookup("big")[0] and len(cache) == 3


def test_identical_requests_share_one_computation():
    cache = ResponseCache(1 << 20)
    calls = 0
    release = asyncio.Event()

    async def compute():
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    async def scenario():
        first = asyncio.ensure_future(cache.get_or_compute("k", compute))
        second = asyncio.ensure_future(cache.get_or_compute("k", compute))
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(first, second)
        third = await cache.get_or_compute("k", compute)  # from the cache now
        return results, third

    (r1, r2), r3 = asyncio.run(scenario())
    assert calls == 1 and r1 == ("answer", False) and r2 == ("answer", True)
    assert r3 == ("answer", True)


def test_shared_work_is_cancelled_only_when_its_last_waiter_leaves():
    cache = ResponseCache(1 << 20)
    started = asyncio.Event()
    cancelled = []

    async def compute():
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async def scenario():
        a = asyncio.ensure_future(cache.get_or_compute("k", compute))
        b = asyncio.ensure_future(cache.get_or_compute("k", compute))
        await started.wait()
        a.cancel()
        await asyncio.sleep(0)
        assert not cancelled  # b still wants it
        b.cancel()
        for t in (a, b):
            with pytest.raises(asyncio.CancelledError):
                await t
        await asyncio.sleep(0)
        return len(cache)

    assert asyncio.run(scenario()) == 0 and cancelled == [True]


def test_failures_are_not_cached():
    cache = ResponseCache(1 << 20)
    attempts = 0

    async def compute():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("boom")
        return "ok"

    async def scenario():
        with pytest.raises(ValueError):
            await cache.get_or_compute("k", compute)
        return await cache.get_or_compute("k", compute)

    assert asyncio.run(scenario()) == ("ok", False) and attempts == 2
