"""Running a task on a model: cache lookup, tokenize off the loop, batch, forward, postprocess.

Tokenization and postprocessing run on worker threads; a small request's calls share thread
hops with other small requests' (zesty.serving.offload), a large one gets its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from zesty import context
from zesty.serving.batcher import BatchStats
from zesty.serving.cache import cache_key
from zesty.serving.model import ServedModel
from zesty.serving.offload import Offload
from zesty.tasks.base import Task, TaskRequest


@dataclass
class Timings:
    tokenization_s: float = 0.0
    queue_s: float = 0.0  # waiting for a forward pass (batcher queue + compute executor)
    inference_s: float = 0.0  # forward passes, as seen by this request
    postprocess_s: float = 0.0
    tokens: int = 0
    cache: str = ""  # "hit" | "miss" | "" (no response cache)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def compute_s(self) -> float:
        return self.tokenization_s + self.queue_s + self.inference_s + self.postprocess_s

    def headers(self) -> dict[str, str]:
        ms = lambda s: str(int(round(s * 1000)))  # noqa: E731
        out = {
            "x-compute-time": ms(self.compute_s),
            "x-tokenization-time": ms(self.tokenization_s),
            "x-queue-time": ms(self.queue_s),
            "x-inference-time": ms(self.inference_s),
            "x-compute-tokens": str(self.tokens),
        }
        if self.cache:
            out["x-cache"] = self.cache
        return out


def request_key(model: ServedModel, task: Task, request: TaskRequest) -> str:
    """Model + artifact + task + normalized inputs + parameters (defaults filled in)."""
    inputs = request.inputs
    if isinstance(inputs, (list, tuple)):
        inputs = [list(x) if isinstance(x, tuple) else x for x in inputs]
    return cache_key(
        model.model_id,
        model.artifact_id,
        task.name,
        inputs,
        request.params.model_dump(mode="json"),
        request.options,
        request.batched,
    )


async def run_task(
    model: ServedModel, task: Task, request: TaskRequest, *, use_cache: bool = True
) -> tuple[Any, Timings]:
    """The task's result for one request; identical requests may share one computation."""
    ctx = context.current()
    if ctx is not None:
        ctx.model, ctx.task = model.model_id, task.name
    model.active += 1
    model.last_used = time.monotonic()
    try:
        cache = model.response_cache
        if cache is None or not cache.enabled:
            return await _compute(model, task, request)
        if not use_cache:
            result, timings = await _compute(model, task, request)
            timings.cache = "miss"
        else:
            key = request_key(model, task, request)
            (result, computed), shared = await cache.get_or_compute(
                key, lambda: _compute(model, task, request)
            )
            if shared:
                timings = Timings(tokens=computed.tokens, cache="hit")
            else:
                timings = dataclasses.replace(computed, cache="miss")
        if ctx is not None:
            ctx.cache = timings.cache
        return result, timings
    finally:
        model.active -= 1
        model.last_used = time.monotonic()


#: requests up to this size share thread hops (zesty.serving.offload); larger ones get their
#: own worker, so they never hold up everyone's small calls
SMALL_INPUTS = 8
SMALL_CHARS = 2048
SMALL_TOKENS = 1024

_offload = Offload()


def _small_inputs(inputs: Any) -> bool:
    if not isinstance(inputs, (list, tuple)) or len(inputs) > SMALL_INPUTS:
        return False
    chars = 0
    for x in inputs:
        if isinstance(x, str):
            chars += len(x)
        elif isinstance(x, (list, tuple)):  # a text pair, or token ids
            chars += sum(len(p) if isinstance(p, str) else 1 for p in x)
        elif isinstance(x, dict):  # e.g. question answering's {question, context}
            chars += sum(len(v) if isinstance(v, str) else 1 for v in x.values())
        else:
            chars += 1
    return chars <= SMALL_CHARS


async def _off_loop(small: bool, fn, *args):
    if small:
        return await _offload.run(fn, *args)
    return await asyncio.to_thread(fn, *args)


async def _compute(model: ServedModel, task: Task, request: TaskRequest) -> tuple[Any, Timings]:
    timings = Timings()
    t0 = time.perf_counter()
    prepared = await _off_loop(_small_inputs(request.inputs), task.preprocess, model, request)
    t1 = time.perf_counter()
    stats = BatchStats()
    outputs = await model.batcher(task.head_for(model)).submit(prepared.sequences, stats)
    t2 = time.perf_counter()
    tokens = sum(int(s.ids.shape[0]) for s in prepared.sequences)
    result = await _off_loop(
        tokens <= SMALL_TOKENS, task.postprocess, model, request, prepared, outputs
    )
    t3 = time.perf_counter()
    timings.tokenization_s, timings.postprocess_s = t1 - t0, t3 - t2
    timings.queue_s = min(stats.queue_s, t2 - t1)
    timings.inference_s = max(t2 - t1 - timings.queue_s, 0.0)
    timings.tokens = tokens
    return result, timings
