"""The batcher, driven by a fake runner and events (no model, no sleeps for timing)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zesty.errors import ModelError
from zesty.runtime.heads import Head
from zesty.serving.batcher import Batcher, Encoded
from zesty.settings import BatchSettings

HEAD = Head("fake", "None", {"states": True, "pooled": False})


class FakeRunner:
    head = HEAD
    backend = "fake"
    input_names = ("input_ids", "attention_mask")

    def __init__(self, gate: threading.Event | None = None, poison: int | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = gate
        self.poison = poison

    def forward(self, inputs):
        if self.gate is not None:
            self.gate.wait(10)
        ids = inputs["input_ids"]
        self.batches.append(ids)
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
