"""Running a task on a model: tokenize off the loop, batch, forward, postprocess."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from zesty.serving.model import ServedModel
from zesty.tasks.base import Task, TaskRequest


@dataclass
class Timings:
    tokenization_s: float = 0.0
    inference_s: float = 0.0  # queue + forward, as seen by this request
    postprocess_s: float = 0.0
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        ms = lambda s: str(int(round(s * 1000)))  # noqa: E731
        return {
            "x-compute-time": ms(self.tokenization_s + self.inference_s + self.postprocess_s),
            "x-tokenization-time": ms(self.tokenization_s),
            "x-inference-time": ms(self.inference_s),
            "x-compute-tokens": str(self.tokens),
        }


async def run_task(model: ServedModel, task: Task, request: TaskRequest) -> tuple[Any, Timings]:
    timings = Timings()
    t0 = time.perf_counter()
    prepared = await asyncio.to_thread(task.preprocess, model, request)
    t1 = time.perf_counter()
    outputs = await model.batcher(task.head_for(model)).submit(prepared.sequences)
    t2 = time.perf_counter()
    result = await asyncio.to_thread(task.postprocess, model, request, prepared, outputs)
    t3 = time.perf_counter()
    timings.tokenization_s, timings.inference_s, timings.postprocess_s = t1 - t0, t2 - t1, t3 - t2
    timings.tokens = sum(int(s.ids.shape[0]) for s in prepared.sequences)
    return result, timings
