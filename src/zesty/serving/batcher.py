"""Dynamic batching: one asyncio queue per (model, head), one future per sequence.

Callers submit tokenized sequences and await their outputs. A single consumer task takes
everything queued (up to `max_batch_size` sequences and `max_batch_tokens` padded tokens),
sorts it by length so padding stays small, and runs the forward pass on the shared compute
executor, off the event loop. When the model is idle a request runs at once; while it is
busy, requests accumulate and form the next batch (optionally waiting `max_batch_wait_ms`
for more). A failing batch is retried item by item so one bad sequence fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from zesty.errors import ModelError
from zesty.runtime.base import Runner
from zesty.settings import BatchSettings

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One tokenized sequence to run."""

    ids: np.ndarray  # int64 (L,)
    type_ids: np.ndarray | None = None


@dataclass
class _Pending:
    seq: Encoded
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def length(self) -> int:
        return int(self.seq.ids.shape[0])


Outputs = dict[str, np.ndarray]


class Batcher:
    def __init__(
        self,
        *,
        name: str,
        runner: Callable[[], Runner],
        pad_id: int,
        settings: BatchSettings,
        executor: Executor,
    ) -> None:
        self.name = name
        self._runner = runner
        self._pad_id = pad_id
        self._settings = settings
        self._executor = executor
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._held: _Pending | None = None  # taken from the queue but did not fit the last batch

    @property
    def queue_size(self) -> int:
        return self._queue.qsize() + (1 if self._held else 0)

    async def submit(self, sequences: Sequence[Encoded]) -> list[Outputs]:
        """Run sequences (possibly in several batches) and return one output dict each."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)
        loop = asyncio.get_running_loop()
        futures = []
        for seq in sequences:
            fut = loop.create_future()
            self._queue.put_nowait(_Pending(seq, fut))
            futures.append(fut)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:  # a caller that leaves takes its sequences out of the queue
                fut.cancel()
            raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- consumer --------------------------------------------------------------------------

    def _fits(self, batch: list[_Pending], item: _Pending) -> bool:
        if len(batch) >= self._settings.max_batch_size:
            return False
        longest = max([item.length] + [p.length for p in batch])
        return longest * (len(batch) + 1) <= self._settings.max_batch_tokens or not batch

    def _next_live(self) -> _Pending | None:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                return item
        return None

    async def _collect(self) -> list[_Pending]:
        first = self._next_live()
        while first is None:
            first = await self._queue.get()
            if first.future.done():
                first = None
        batch = [first]
        deadline = time.perf_counter() + self._settings.max_batch_wait_ms / 1000
        while True:
            item = self._next_live()
            if item is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or len(batch) >= self._settings.max_batch_size:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item.future.done():
                    continue
            if not self._fits(batch, item):
                self._held = item
                break
            batch.append(item)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            batch.sort(key=lambda p: p.length)
            try:
                results = await loop.run_in_executor(self._executor, self._run_safely, batch)
            except asyncio.CancelledError:
                for p in batch:
                    p.future.cancel()
                raise
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    # -- compute (executor thread) ------------------------------------------------------------

    def _run_safely(self, batch: list[_Pending]) -> list[Outputs | BaseException]:
        try:
            return list(self._run([p.seq for p in batch]))
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                log.exception("inference failed in %s", self.name)
                return [ModelError(f"the model failed on this input: {type(exc).__name__}")]
            return [self._run_safely([p])[0] for p in batch]

    def _run(self, seqs: list[Encoded]) -> list[Outputs]:
        return run_padded(self._runner(), seqs, self._pad_id)


def run_padded(runner: Runner, seqs: Sequence[Encoded], pad_id: int) -> list[Outputs]:
    """Pad sequences into one batch, run it, and cut each output back to its sequence."""
    lengths = [int(s.ids.shape[0]) for s in seqs]
    width = max(lengths)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    types = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : lengths[i]] = s.ids
        mask[i, : lengths[i]] = 1
        if s.type_ids is not None:
            types[i, : lengths[i]] = s.type_ids
    out = runner.forward({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    per_token = runner.head.outputs
    return [
        {
            name: (arr[i, : lengths[i]] if per_token[name] else arr[i]).copy()
            for name, arr in out.items()
        }
        for i in range(len(seqs))
    ]
