"""The batcher, driven by a fake runner and events (no model, no sleeps for timing)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zesty.errors import ModelError
from zesty.runtime.heads import Head
from zesty.serving.batcher import Batcher, BatchStats, Encoded
from zesty.serving.compute import ComputePool
from zesty.settings import BatchSettings

HEAD = Head("fake", "None", {"states": True, "pooled": False})


class FakeRunner:
    head = HEAD
    backend = "fake"
    input_names = ("input_ids", "attention_mask")
    narrow_capable = False

    def __init__(self, gate: threading.Event | None = None, poison: int | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.narrow_flags: list[bool] = []
        self.gate = gate
        self.poison = poison

    def forward(self, inputs, narrow=False):
        if self.gate is not None:
            self.gate.wait(10)
        ids = inputs["input_ids"]
        self.batches.append(ids)
        self.narrow_flags.append(narrow)
        if self.poison is not None and (ids == self.poison).any():
            raise RuntimeError("poisoned")
        mask = inputs["attention_mask"]
        return {"states": ids[..., None].astype(np.float32) * mask[..., None], "pooled": ids.sum(1)}


def seq(*ids: int) -> Encoded:
    return Encoded(np.array(ids, dtype=np.int64))


def make(runner, **settings) -> Batcher:
    return Batcher(
        name="t",
        runner=lambda: runner,
        pad_id=0,
        settings=BatchSettings(**settings),
        executor=ThreadPoolExecutor(1),
    )


def test_outputs_are_unpadded_per_sequence():
    runner = FakeRunner()
    out = asyncio.run(make(runner).submit([seq(1, 2, 3), seq(4)]))
    assert out[0]["states"].shape == (3, 1) and out[1]["states"].shape == (1, 1)
    assert out[0]["pooled"] == 6 and out[1]["pooled"] == 4
    assert len(runner.batches) == 1


class LaneRunner(FakeRunner):
    """Can run on one core; counts how many forwards overlap, and makes narrow ones meet."""

    narrow_capable = True

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.meet = threading.Barrier(2, timeout=10)

    def forward(self, inputs, narrow=False):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if narrow:
                self.meet.wait()  # a second narrow batch must be running beside this one
            return super().forward(inputs, narrow)
        finally:
            with self.lock:
                self.running -= 1


def make_pooled(runner, cores: int, **settings) -> Batcher:
    return Batcher(
        name="t",
        runner=lambda: runner,
        pad_id=0,
        settings=BatchSettings(**settings),
        executor=ComputePool(cores),
    )


def test_under_load_batches_run_side_by_side_one_per_core():
    """A lone batch on an idle pool gets every core; with work waiting behind it, a runner
    that can run on one core gets one batch in flight per core, each narrow."""
    runner = LaneRunner()
    batcher = make_pooled(runner, 2, max_batch_size=4)

    async def scenario():
        await batcher.submit([seq(1)])  # idle: wide (and the batcher learns the runner)
        return await batcher.submit([seq(i, i) for i in range(1, 9)])

    out = asyncio.run(scenario())
    assert [int(o["pooled"]) for o in out] == [2 * i for i in range(1, 9)]
    assert runner.narrow_flags == [False, True, True]
    assert [b.shape[0] for b in runner.batches] == [1, 4, 4]
    assert runner.most == 2


def test_one_batch_waits_on_the_pool_behind_busy_lanes_without_callers_that_left():
    """With both lanes busy, the next batch is already handed to the pool, so a lane that
    finishes starts it without waiting for the event loop; a caller that leaves while it
    waits there is not run."""
    gate = threading.Event()
    runner = FakeRunner(gate)
    runner.narrow_capable = True
    batcher = make_pooled(runner, 2, max_batch_size=2)

    async def scenario():
        gate.set()
        await batcher.submit([seq(9)])  # idle: wide (and the batcher learns the runner)
        gate.clear()
        callers = [asyncio.ensure_future(batcher.submit([seq(i, i)])) for i in range(1, 9)]
        for _ in range(1000):
            if batcher.queue_size == 2:
                break
            await asyncio.sleep(0.001)
        # two batches on the lanes, a third on the pool's queue, the last one still waiting
        assert batcher.queue_size == 2
        callers[4].cancel()  # its batch ([5, 5], [6, 6]) is queued on the pool
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await callers[4]
        return await asyncio.gather(*callers[:4], *callers[5:])

    out = asyncio.run(scenario())
    assert [int(o[0]["pooled"]) for o in out] == [2, 4, 6, 8, 12, 14, 16]
    assert all(5 not in b for b in runner.batches)
    assert sorted(b.shape[0] for b in runner.batches) == [1, 1, 2, 2, 2]
    assert runner.narrow_flags[1:4] == [True] * 3  # the last may run alone, wide


def test_a_runner_without_a_one_core_mode_runs_one_batch_at_a_time():
    runner = LaneRunner()
    runner.narrow_capable = False
    batcher = make_pooled(runner, 2, max_batch_size=2)

    async def scenario():
        await batcher.submit([seq(1)])
        return await batcher.submit([seq(i) for i in range(1, 9)])

    assert len(asyncio.run(scenario())) == 8
    assert runner.most == 1 and not any(runner.narrow_flags)
    assert [b.shape[0] for b in runner.batches] == [1, 2, 2, 2, 2]


def test_requests_arriving_while_busy_form_one_batch():
    gate = threading.Event()
    runner = FakeRunner(gate)
    batcher = make(runner)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([seq(1)]))
        while not batcher._task or batcher.queue_size:  # the first batch is taken
            await asyncio.sleep(0)
        others = [asyncio.ensure_future(batcher.submit([seq(i, i)])) for i in range(2, 6)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *others)

    asyncio.run(scenario())
    assert [b.shape[0] for b in runner.batches] == [1, 4]


def test_callers_leaving_during_the_batch_wait_do_not_kill_the_loop():
    """With --max-batch-wait-ms, every caller in the window may leave while it waits: the
    same loop goes back to waiting and serves the next caller."""
    gate = threading.Event()
    runner = FakeRunner(gate)
    batcher = make(runner, max_batch_wait_ms=100)

    async def scenario():
        first, leaving = await _queued_behind_a_running_batch(batcher, gate, 2)
        await first
        await asyncio.sleep(0.02)  # the loop now holds `leaving` in its 100 ms wait
        leaving.cancel()
        loop_task = batcher._task
        await asyncio.sleep(0.2)  # past the wait, with nothing left in the window
        assert not loop_task.done()  # it died of an empty window before (ValueError)
        out = await asyncio.wait_for(batcher.submit([seq(3)]), 5)
        assert batcher._task is loop_task
        await batcher.close()
        return out

    out = asyncio.run(scenario())
    assert int(out[0]["pooled"]) == 3
    assert all(2 not in b for b in runner.batches)


def test_token_budget_and_size_cap_split_batches():
    runner = FakeRunner()
    asyncio.run(make(runner, max_batch_size=3).submit([seq(1)] * 7))
    assert [b.shape[0] for b in runner.batches] == [3, 3, 1]
    runner = FakeRunner()
    asyncio.run(make(runner, max_batch_tokens=8).submit([seq(*range(1, 5))] * 4))
    assert [b.shape for b in runner.batches] == [(2, 4), (2, 4)]


def test_a_poisoned_item_fails_alone():
    runner = FakeRunner(poison=99)
    batcher = make(runner)

    async def scenario():
        return await asyncio.gather(
            batcher.submit([seq(1, 2)]),
            batcher.submit([seq(99)]),
            batcher.submit([seq(3)]),
            return_exceptions=True,
        )

    good1, bad, good2 = asyncio.run(scenario())
    assert isinstance(bad, ModelError) and "RuntimeError" in bad.message
    assert good1[0]["pooled"] == 3 and good2[0]["pooled"] == 3


def test_a_cancelled_caller_is_dropped_before_its_batch_runs():
    gate = threading.Event()
    runner = FakeRunner(gate)
    batcher = make(runner)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([seq(1)]))
        while batcher.queue_size:
            await asyncio.sleep(0)
        leaver = asyncio.ensure_future(batcher.submit([seq(7, 7, 7)]))
        stayer = asyncio.ensure_future(batcher.submit([seq(2)]))
        await asyncio.sleep(0)
        leaver.cancel()
        gate.set()
        await asyncio.gather(first, stayer)
        with pytest.raises(asyncio.CancelledError):
            await leaver

    asyncio.run(scenario())
    assert all(7 not in b for b in runner.batches)


# -- grouping, metrics hooks, queue time, idle/busy waiting -----------------------------------


class Recorder:
    def __init__(self) -> None:
        self.records = []

    def batch_done(self, record) -> None:
        self.records.append(record)


async def _wait_taken(batcher: Batcher) -> None:
    """Until the consumer has taken everything queued (it is then blocked in a forward)."""
    while batcher.queue_size or not batcher.busy:
        await asyncio.sleep(0)


async def _queued_behind_a_running_batch(batcher: Batcher, gate: threading.Event, *ids: int):
    """A first request whose forward pass is held, `ids` queued behind it, then the gate
    opened: the consumer finds the second waiting (traffic flows), so it may wait for more."""
    first = asyncio.ensure_future(batcher.submit([seq(1)]))
    await _wait_taken(batcher)
    second = asyncio.ensure_future(batcher.submit([seq(*ids)]))
    await asyncio.sleep(0)
    gate.set()
    return first, second


def test_a_window_is_grouped_by_length_oldest_first():
    gate = threading.Event()
    runner = FakeRunner(gate)
    recorder = Recorder()
    batcher = make(runner, max_batch_size=3)
    batcher.observer = recorder

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([seq(1)]))
        await _wait_taken(batcher)
        # arrive interleaved: long, short, long, short, long, short
        waiting = [
            asyncio.ensure_future(batcher.submit([seq(*[5] * (8 if i % 2 == 0 else 1))]))
            for i in range(6)
        ]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *waiting)

    asyncio.run(scenario())
    # the oldest waiting sequence is long, so the long group runs first; no padding at all
    assert [b.shape for b in runner.batches] == [(1, 1), (3, 8), (3, 1)]
    assert [r.padding_ratio for r in recorder.records] == [0.0, 0.0, 0.0]
    assert [(r.size, r.tokens, r.padded_tokens) for r in recorder.records] == [
        (1, 1, 1),
        (3, 24, 24),
        (3, 3, 3),
    ]


def test_padding_ratio_counts_pad_tokens():
    runner = FakeRunner()
    recorder = Recorder()
    batcher = make(runner)
    batcher.observer = recorder
    asyncio.run(batcher.submit([seq(1, 2, 3, 4), seq(5)]))
    (record,) = recorder.records
    assert (record.size, record.tokens, record.padded_tokens) == (2, 5, 8)
    assert record.padding_ratio == 3 / 8


def test_queue_time_is_measured_for_a_waiting_caller():
    gate = threading.Event()
    batcher = make(FakeRunner(gate))
    stats = BatchStats()

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([seq(1)]))
        await _wait_taken(batcher)
        second = asyncio.ensure_future(batcher.submit([seq(2)], stats))
        await asyncio.sleep(0.05)  # the second caller waits behind the gated forward
        gate.set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert stats.queue_s >= 0.04 and stats.compute_s >= 0


def test_an_idle_model_never_waits_for_more_requests():
    import time

    batcher = make(FakeRunner(), max_batch_wait_ms=1000)

    async def scenario():
        start = time.perf_counter()
        await batcher.submit([seq(1)])
        return time.perf_counter() - start

    assert asyncio.run(scenario()) < 0.5  # far below the 1 s wait


def test_a_busy_model_waits_up_to_max_batch_wait_to_fill_a_batch():
    gate = threading.Event()
    runner = FakeRunner(gate)
    batcher = make(runner, max_batch_wait_ms=200)

    async def scenario():
        first, early = await _queued_behind_a_running_batch(batcher, gate, 2)
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit([seq(3)]))  # within the 200 ms window
        await asyncio.gather(first, early, late)

    asyncio.run(scenario())
    assert [b.shape[0] for b in runner.batches] == [1, 2]


def test_one_poisoned_item_in_a_batch_of_16_fails_alone_and_the_loop_goes_on():
    gate = threading.Event()
    runner = FakeRunner(gate, poison=99)
    recorder = Recorder()
    batcher = make(runner)
    batcher.observer = recorder

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([seq(1)]))
        await _wait_taken(batcher)
        items = [seq(99) if i == 7 else seq(i + 1, 2) for i in range(16)]
        calls = [asyncio.ensure_future(batcher.submit([s])) for s in items]
        await asyncio.sleep(0)
        gate.set()
        await first
        results = await asyncio.gather(*calls, return_exceptions=True)
        after = await batcher.submit([seq(5)])  # the next batch runs
        return results, after

    results, after = asyncio.run(scenario())
    assert sum(isinstance(r, ModelError) for r in results) == 1 and isinstance(
        results[7], ModelError
    )
    assert all(r[0]["pooled"] == i + 3 for i, r in enumerate(results) if i != 7)
    assert recorder.records[1].size == 16  # they shared one forward pass before the retry
    assert after[0]["pooled"] == 5


def test_a_failing_observer_never_stops_the_loop():
    class Broken:
        def batch_done(self, record):
            raise ValueError("metrics down")

    batcher = make(FakeRunner())
    batcher.observer = Broken()

    async def scenario():
        await batcher.submit([seq(1)])
        return await batcher.submit([seq(2)])

    assert asyncio.run(scenario())[0]["pooled"] == 2
