"""Dynamic batching: one asyncio queue per (model, head), one future per sequence.

Callers submit tokenized sequences and await their outputs. A single consumer task keeps a
window of waiting sequences (everything queued, up to a few batches' worth), sorts it by
length, cuts it into batches that respect `max_batch_size` and `max_batch_tokens` (padded
tokens: sequences x longest), and runs the batch holding the oldest sequence, so similar
lengths share a forward pass (little padding) and nobody starves. The forward pass runs on the
shared compute pool, off the event loop. When the model is idle a request runs at once, on
every core; when sequences were already waiting, a non-full batch may wait `max_batch_wait_ms`
for more. Under load, a runner that can run on one core (`narrow_capable`) gets one batch in
flight per core of the pool (zesty.serving.compute): lanes, each batch single-threaded, and
one more batch queued on the pool behind them, so a lane that finishes starts the next batch
at once instead of idling until the event loop gets round to it (+5% of the machine used at
32 clients, docs/serving.md). A caller that leaves while its batch waits there is skipped.
How the window is cut is `batch_plan`'s: the least estimated compute, padding included.
A failing batch is retried item by item so one bad sequence fails alone; a caller that leaves
(timeout, disconnect) has its sequences dropped before they run; the loop never dies.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from zesty.errors import ModelError
from zesty.runtime.base import Runner
from zesty.serving.batch_plan import plan
from zesty.serving.compute import ComputePool
from zesty.settings import BatchSettings

log = logging.getLogger(__name__)

#: how many batches' worth of sequences the consumer looks at when grouping by length
WINDOW_BATCHES = 4
#: batches queued on the compute pool behind its busy lanes (see Batcher._slots)
PREFETCH = 1


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
    started: float | None = None  # when its forward pass began (set on the compute thread)

    @property
    def length(self) -> int:
        return int(self.seq.ids.shape[0])


Outputs = dict[str, np.ndarray]


@dataclass
class BatchStats:
    """What one caller's sequences went through; `submit` fills it in."""

    queue_s: float = 0.0  # longest wait of one of its sequences before its forward pass began
    compute_s: float = 0.0  # the rest of the time spent in submit (forward passes, unpadding)


@dataclass
class BatchRecord:
    """One forward pass, for metrics."""

    size: int
    tokens: int  # real tokens
    padded_tokens: int  # size x longest
    forward_s: float

    @property
    def padding_ratio(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


class BatchObserver(Protocol):
    def batch_done(self, record: BatchRecord) -> None: ...


class Batcher:
    def __init__(
        self,
        *,
        name: str,
        runner: Callable[[], Runner],
        pad_id: int,
        settings: BatchSettings,
        executor: Executor,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._runner = runner
        self._pad_id = pad_id
        self._settings = settings
        self._executor = executor
        self.observer = observer
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._window: list[_Pending] = []  # taken from the queue, not yet run
        self._inflight: dict[asyncio.Task, bool] = {}  # forward passes running -> narrow?
        self._narrow_ok = False  # the runner of the last batch can run on one core
        self._backlog = False  # sequences arrived while the last forward pass ran

    @property
    def busy(self) -> bool:
        """A forward pass is running."""
        return bool(self._inflight)

    @property
    def queue_size(self) -> int:
        """Sequences waiting (not yet in a forward pass), cancelled ones included until seen."""
        return self._queue.qsize() + len(self._window)

    async def submit(
        self, sequences: Sequence[Encoded], stats: BatchStats | None = None
    ) -> list[Outputs]:
        """Run sequences (possibly in several batches) and return one output dict each."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            # an empty context: the loop must not carry the first caller's request id
            self._task = contextvars.Context().run(loop.create_task, self._loop(), name=self.name)
        begin = time.perf_counter()
        pending = [_Pending(seq, loop.create_future()) for seq in sequences]
        for p in pending:
            self._queue.put_nowait(p)
        try:
            outputs = list(await asyncio.gather(*(p.future for p in pending)))
        except BaseException:
            for p in pending:  # a caller that leaves takes its sequences out of the queue
                p.future.cancel()
            raise
        if stats is not None:
            started = [p.started for p in pending if p.started is not None]
            stats.queue_s = max((s - p.enqueued for s, p in zip(started, pending)), default=0.0)
            stats.compute_s = max(time.perf_counter() - begin - stats.queue_s, 0.0)
        return outputs

    async def close(self) -> None:
        for task in [self._task, *self._inflight]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - close everything whatever a task died of
                log.exception("batcher task failed in %s", self.name)
        self._task = None
        for p in self._window:
            p.future.cancel()
        self._window.clear()
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    # -- consumer --------------------------------------------------------------------------

    def _live_window(self) -> list[_Pending]:
        self._window = [p for p in self._window if not p.future.done()]
        return self._window

    def _fill_window(self) -> None:
        cap = WINDOW_BATCHES * self._settings.max_batch_size
        while len(self._window) < cap and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                self._window.append(item)

    def _partition(self, items: list[_Pending]) -> list[list[_Pending]]:
        """Length-sorted items cut into the batches of least estimated compute (batch_plan)."""
        ordered = sorted(items, key=lambda p: p.length)
        runs = plan(
            [p.length for p in ordered],
            self._settings.batch_overhead_tokens,
            self._settings.max_batch_size,
            self._settings.max_batch_tokens,
        )
        return [ordered[start:end] for start, end in runs]

    async def _collect(self) -> list[_Pending]:
        while True:  # until a batch is left: every caller in the window may leave meanwhile
            batch = await self._collect_once()
            if batch:
                return batch

    async def _collect_once(self) -> list[_Pending]:
        self._fill_window()
        # nothing arrived during the last forward pass, and none is running
        idle = not self._backlog and not self._inflight
        while not self._live_window():
            item = await self._queue.get()
            if not item.future.done():
                self._window.append(item)
            self._fill_window()
        wait_s = self._settings.max_batch_wait_ms / 1000
        if not idle and wait_s > 0:  # traffic is flowing: let a small batch fill up a little
            deadline = time.perf_counter() + wait_s
            while len(self._live_window()) < self._settings.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if not item.future.done():
                    self._window.append(item)
        window = self._live_window()
        if not window:
            return []
        oldest = min(window, key=lambda p: p.enqueued)
        batch = next(b for b in self._partition(window) if any(p is oldest for p in b))
        chosen = {id(p) for p in batch}
        self._window = [p for p in window if id(p) not in chosen]
        return batch

    def _lanes(self) -> int:
        """How many batches may run at once: one per core while each runs on one core."""
        pool = self._executor
        if not isinstance(pool, ComputePool) or not self._narrow_ok:
            return 1
        return 1 if any(not narrow for narrow in self._inflight.values()) else pool.cores

    def _slots(self) -> int:
        """Batches handed to the pool at once: the lanes, plus one queued behind them while
        they run narrow, so a lane that finishes starts the next batch at once instead of
        idling until the event loop gets round to dispatching it."""
        lanes = self._lanes()
        return lanes + PREFETCH if lanes > 1 else lanes

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while len(self._inflight) >= self._slots():  # the window fills meanwhile
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            batch = await self._collect()
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            # alone on an idle pool: every core for this batch; else one core, side by side
            narrow = self._lanes() > 1 and (
                bool(self._inflight) or self.queue_size > 0 or self._executor.busy
            )
            task = loop.create_task(self._dispatch(batch, narrow))
            self._inflight[task] = narrow
            task.add_done_callback(self._inflight.pop)

    async def _dispatch(self, batch: list[_Pending], narrow: bool) -> None:
        pool = self._executor
        submit = pool.submit_narrow if narrow and isinstance(pool, ComputePool) else pool.submit
        try:
            results, record = await asyncio.wrap_future(submit(self._run_safely, batch, narrow))
        except asyncio.CancelledError:
            for p in batch:
                p.future.cancel()
            raise
        except Exception:  # noqa: BLE001 - serving must outlive any failure
            log.exception("batch failed in %s", self.name)
            err = ModelError("the model failed on this batch")
            results, record = [err] * len(batch), None
        finally:
            self._backlog = self.queue_size > 0
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        if record is not None and self.observer is not None:
            try:
                self.observer.batch_done(record)
            except Exception:  # noqa: BLE001 - metrics never break serving
                log.exception("batch observer failed")

    # -- compute (executor thread) ------------------------------------------------------------

    def _run_safely(
        self, batch: list[_Pending], narrow: bool = False
    ) -> tuple[list[Outputs | BaseException], BatchRecord | None]:
        start = time.perf_counter()
        # callers that left while the batch waited for a lane are not run (a hint read off
        # the loop: one that leaves from now on gets its result dropped by _dispatch)
        live = [p for p in batch if not p.future.done()]
        if not live:
            return [ModelError("dropped")] * len(batch), None
        for p in live:
            p.started = start
        lengths = [p.length for p in live]
        record = BatchRecord(len(live), sum(lengths), len(live) * max(lengths), 0.0)
        outputs = dict(zip(map(id, live), self._isolate(live, narrow)))
        record.forward_s = time.perf_counter() - start
        return [outputs.get(id(p), ModelError("dropped")) for p in batch], record

    def _isolate(self, batch: list[_Pending], narrow: bool) -> list[Outputs | BaseException]:
        try:
            return list(self._run([p.seq for p in batch], narrow))
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                log.exception("inference failed in %s", self.name)
                return [ModelError(f"the model failed on this input: {type(exc).__name__}")]
            # one by one; a caller that left meanwhile is skipped (its result is never read)
            return [
                self._isolate([p], narrow)[0] if not p.future.done() else ModelError("dropped")
                for p in batch
            ]

    def _run(self, seqs: list[Encoded], narrow: bool) -> list[Outputs]:
        runner = self._runner()
        self._narrow_ok = runner.narrow_capable
        return run_padded(runner, seqs, self._pad_id, narrow=narrow and self._narrow_ok)


def run_padded(
    runner: Runner, seqs: Sequence[Encoded], pad_id: int, narrow: bool = False
) -> list[Outputs]:
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
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    out = runner.forward(feed, narrow=narrow)
    per_token = runner.head.outputs
    return [
        {
            name: (arr[i, : lengths[i]] if per_token[name] else arr[i]).copy()
            for name, arr in out.items()
        }
        for i in range(len(seqs))
    ]
