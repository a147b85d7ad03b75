"""Admission: permits without waiting, 429 with Retry-After, draining, waiting for idle."""

from __future__ import annotations

import asyncio

import pytest

from zesty.errors import Overloaded, ShuttingDown
from zesty.serving.admission import Admission


def test_permits_up_to_the_limit_then_overloaded_with_retry_after():
    a = Admission(limit=3)
    for _ in range(3):
        a.acquire()
    with pytest.raises(Overloaded) as exc:
        a.acquire()
    assert exc.value.status_code == 429 and exc.value.error_type == "overloaded"
    assert int(exc.value.headers["Retry-After"]) >= 1
    assert a.in_flight == 3
    a.release(0.1)
    a.acquire()  # a released permit is reusable at once
    assert a.in_flight == 3


def test_retry_after_follows_request_durations():
    a = Admission(limit=1)
    for _ in range(50):
        a.acquire()
        a.release(4.2)
    assert a.retry_after() == 5


def test_draining_refuses_new_work_and_waits_for_in_flight():
    a = Admission(limit=10)

    async def scenario():
        a.acquire()
        a.acquire()
        a.begin_drain()
        with pytest.raises(ShuttingDown):
            a.acquire()
        assert not await a.wait_idle(0.01)  # still two in flight
        waiter = asyncio.ensure_future(a.wait_idle(5))
        await asyncio.sleep(0)
        a.release(0.0)
        await asyncio.sleep(0)
        assert not waiter.done()
        a.release(0.0)
        assert await waiter

    asyncio.run(scenario())
    assert a.in_flight == 0
