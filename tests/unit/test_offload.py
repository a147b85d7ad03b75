"""Offload: small blocking calls share thread hops, each keeping its own result, exception and
context; callers that leave are skipped."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from zesty.serving.offload import Offload

REQUEST = contextvars.ContextVar("request", default="none")


def test_calls_queued_together_share_one_hop_and_keep_their_own_results():
    gate = threading.Event()
    offload = Offload(ThreadPoolExecutor(4))
    threads = set()

    def work(i: int) -> tuple[int, str]:
        threads.add(threading.get_ident())
        if i == 0:
            assert gate.wait(10)  # hold the worker: the other calls queue behind this one
        if i == 3:
            raise ValueError("three")
        return i * i, REQUEST.get()

    async def call(i: int):
        REQUEST.set(f"req-{i}")
        return await offload.run(work, i)

    async def scenario():
        first = asyncio.ensure_future(call(0))
        await asyncio.sleep(0.05)  # the worker is now inside work(0)
        rest = [asyncio.ensure_future(call(i)) for i in range(1, 8)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    out = asyncio.run(scenario())
    assert out[0] == (0, "req-0") and out[1] == (1, "req-1") and out[7] == (49, "req-7")
    assert isinstance(out[3], ValueError) and str(out[3]) == "three"
    assert len(threads) == 1  # one worker ran them all
    assert offload.rounds == 2  # the first call alone, then the seven queued behind it


def test_a_caller_that_left_is_not_run():
    gate = threading.Event()
    offload = Offload(ThreadPoolExecutor(1))
    ran = []

    def work(i: int) -> int:
        if i == 0:
            assert gate.wait(10)
        ran.append(i)
        return i

    async def scenario():
        first = asyncio.ensure_future(offload.run(work, 0))
        await asyncio.sleep(0.05)
        leaver = asyncio.ensure_future(offload.run(work, 1))
        stayer = asyncio.ensure_future(offload.run(work, 2))
        await asyncio.sleep(0)
        leaver.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await leaver
        return await asyncio.gather(first, stayer)

    assert asyncio.run(scenario()) == [0, 2]
    assert ran == [0, 2]


def test_callers_on_different_event_loops_get_their_own_results():
    offload = Offload(ThreadPoolExecutor(2))
    results = {}

    def client(name: str) -> None:
        async def go():
            return [await offload.run(lambda n=n: f"{name}-{n}") for n in range(50)]

        results[name] = asyncio.run(go())

    threads = [threading.Thread(target=client, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for name in ("a", "b", "c"):
        assert results[name] == [f"{name}-{n}" for n in range(50)]


def test_a_shut_down_executor_raises_and_does_not_wedge_the_queue():
    pool = ThreadPoolExecutor(1)
    offload = Offload(pool)
    pool.shutdown()

    async def scenario():
        with pytest.raises(RuntimeError):
            await offload.run(int, "1")

    asyncio.run(scenario())
    offload._executor = ThreadPoolExecutor(1)  # a fresh pool: the next call runs
    assert asyncio.run(offload.run(int, "7")) == 7


@pytest.mark.parametrize(
    "inputs, small",
    [
        (["a short text"], True),
        (["x" * 2048], True),
        (["x" * 2049], False),  # long: its own worker
        (["t"] * 8, True),
        (["t"] * 9, False),  # many: its own worker
        ([("question?", "context " * 100)], True),
        ([list(range(300))], True),  # token ids
        ([{"question": "q", "context": "c" * 5000}], False),
        ("not a list", False),
    ],
)
def test_which_requests_share_hops(inputs, small):
    from zesty.serving.inference import _small_inputs

    assert _small_inputs(inputs) is small


def test_a_call_raising_stopiteration_does_not_strand_the_others():
    gate = threading.Event()
    offload = Offload(ThreadPoolExecutor(1))

    def work(i: int) -> int:
        if i == 0:
            assert gate.wait(10)
        if i == 1:
            raise StopIteration
        return i

    async def scenario():
        first = asyncio.ensure_future(offload.run(work, 0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(offload.run(work, i)) for i in (1, 2)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), 10)

    out = asyncio.run(scenario())
    assert out[0] == 0 and isinstance(out[1], RuntimeError) and out[2] == 2


def test_a_drain_its_executor_cancelled_does_not_wedge_later_calls():
    from concurrent.futures import Executor, Future

    class Cancelling(Executor):
        def submit(self, fn, /, *args, **kwargs):
            future = Future()
            future.cancel()  # as `shutdown(cancel_futures=True)` does to a queued job
            return future

    offload = Offload(Cancelling())

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(offload.run(int, "1"), 0.2)
        offload._executor = ThreadPoolExecutor(1)
        return await asyncio.wait_for(offload.run(int, "7"), 5)

    assert asyncio.run(scenario()) == 7
