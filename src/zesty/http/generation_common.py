"""What the text-generation routes of every dialect share: finding the model, submitting
requests (n of them), collecting or merging their events, and timing headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from zesty import context
from zesty.errors import ModelLoading, ModelUnavailable, TaskNotSupported
from zesty.generation.engine import RequestStream
from zesty.generation.model import TASK, GenerativeModel
from zesty.generation.types import GenerationRequest, TokenEvent
from zesty.generation.validate import with_seed
from zesty.http.deps import State
from zesty.http.generation_metrics import GenerationMetrics


async def generative_model(
    st: State, model_id: str | None, *, wait: bool = False
) -> GenerativeModel:
    """The model named (it must generate text), else the first served causal LM. A model
    still loading answers 503 `loading` with its estimated time, or is awaited (`wait`: the
    HF API's `options.wait_for_model` / `x-wait-for-model: true`)."""
    if model_id is not None:
        model = await st.manager.get(model_id, wait=wait)
        if not getattr(model, "generative", False):
            raise TaskNotSupported(
                f"model {model_id} cannot do {TASK}: it is a {model.task} model", param="model"
            )
        _label(model)
        return model  # type: ignore[return-value]
    first_error: Exception | None = None
    for served_id, entry in st.manager.entries.items():
        if entry.state == "ready" and getattr(entry.model, "generative", False):
            return await generative_model(st, served_id)
    for served_id, entry in st.manager.entries.items():
        if entry.state == "ready":
            continue
        try:
            model = await st.manager.get(served_id, wait=wait)
        except (ModelLoading, ModelUnavailable) as exc:
            first_error = first_error or exc
            continue
        if getattr(model, "generative", False):
            _label(model)
            return model  # type: ignore[return-value]
    if first_error is not None:
        raise first_error
    raise TaskNotSupported(f"no served model can do {TASK}", param="model")


def _label(model) -> None:
    ctx = context.current()
    if ctx is not None:
        ctx.model, ctx.task = model.model_id, TASK


@dataclass
class Run:
    """n submitted requests of one call, with their timing."""

    model: GenerativeModel
    streams: list[RequestStream]
    metrics: GenerationMetrics | None = None
    started: float = field(default_factory=time.perf_counter)
    generated: int = 0
    _last: dict[int, float] = field(default_factory=dict)

    def observe(self, choice: int, event: TokenEvent) -> None:
        """Count a token; time to first token and inter-token latency per choice."""
        self.generated += 1
        if self.metrics is None:
            return
        now, model = time.perf_counter(), self.model.model_id
        last = self._last.get(choice)
        if last is None:
            self.metrics.ttft.labels(model).observe(now - self.started)
        else:
            self.metrics.itl.labels(model).observe(now - last)
        self._last[choice] = now
        self.metrics.tokens.labels(model).inc()
        if event.finish_reason is not None:
            self.metrics.finished.labels(model, event.finish_reason).inc()

    @property
    def prompt_tokens(self) -> int:
        return self.streams[0].prompt_tokens

    async def aclose(self) -> None:
        for s in self.streams:
            await s.aclose()

    def headers(self) -> dict[str, str]:
        total = time.perf_counter() - self.started
        out = {
            "x-prompt-tokens": str(self.prompt_tokens),
            "x-generated-tokens": str(self.generated),
            "x-total-time": str(int(round(total * 1000))),
            "x-compute-type": "cpu",
        }
        if self.generated:
            out["x-time-per-token"] = str(int(round(total * 1000 / self.generated)))
        return out


def submit(st: State, model: GenerativeModel, request: GenerationRequest, n: int = 1) -> Run:
    engine = model.engine_for(st.settings.generation)
    metrics = GenerationMetrics.of(st.metrics)
    if engine.observer is None:
        engine.observer = metrics.step_observer(model.model_id)
    streams: list[RequestStream] = []
    try:
        for i in range(n):
            streams.append(engine.submit(with_seed(request, i)))
    except BaseException:
        streams.clear()  # the ones admitted are cancelled as they are dropped
        raise
    return Run(model, streams, metrics)


async def collect(run: Run) -> list[list[TokenEvent]]:
    """Every event of every choice (non-streamed answers)."""
    model = run.model
    model.active += 1
    try:

        async def one(i: int, stream: RequestStream) -> list[TokenEvent]:
            events = []
            async for e in stream:
                run.observe(i, e)
                events.append(e)
            return events

        results = await asyncio.gather(*(one(i, s) for i, s in enumerate(run.streams)))
    finally:
        model.active -= 1
        await run.aclose()
    return list(results)


async def merged(run: Run) -> AsyncIterator[tuple[int, TokenEvent]]:
    """(choice index, event) as they come, over all choices; closing it cancels them all."""
    model = run.model
    model.active += 1
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: RequestStream) -> None:
        try:
            async for e in stream:
                await queue.put((i, e))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer below
            await queue.put((i, exc))
        await queue.put((i, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(run.streams)]
    try:
        open_streams = len(tasks)
        while open_streams:
            i, item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                run.observe(i, item)
                yield i, item
    finally:
        model.active -= 1
        for t in tasks:
            t.cancel()
        await run.aclose()
