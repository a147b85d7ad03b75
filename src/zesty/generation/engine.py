"""The asyncio generation engine: continuous batching over the scheduler, runner and sampler.

`engine.generate(request)` is an async iterator of `TokenEvent`s. One background task runs
the step loop: `schedule()` on the event loop (cheap bookkeeping), the forward pass and the
sampling as a wide job on the compute pool (off the loop, every core, shared with every
other model: zesty.serving.compute), then
`update_from_output()`, detokenization and stop matching back on the loop, which push each
new token to its request's queue. Requests join and leave the running batch at every step.

A consumer that goes away (client disconnect, deadline) closes its iterator; that aborts its
sequence at once, so it takes no part in the next step and its KV slot is free for the next
`schedule()` (a step already in flight finishes; its result for that sequence is dropped).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

from zesty.errors import InvalidInput, ModelError, Overloaded
from zesty.generation.detokenize import Detokenizer, StopMatcher
from zesty.generation.kv_cache import KVCache
from zesty.generation.runner_torch import StepInput
from zesty.generation.sampling import SampleRow, make_generator, sample
from zesty.generation.scheduler import Scheduler, SchedulerConfig, SchedulerOutput, Sequence
from zesty.generation.types import GenerationRequest, TokenEvent

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    seq: Sequence
    queue: asyncio.Queue
    detok: Detokenizer
    stop: StopMatcher
    generator: object
    seed: int | None
    text: list[str] = field(default_factory=list)
    done: bool = False  # the engine is through with it (finished, failed or cancelled)
    finished: bool = False  # the consumer has seen its last event


class RequestStream:
    """The events of one admitted request: `async for event in stream`, then `aclose()`
    (or `async with`); leaving early cancels the sequence at once."""

    def __init__(self, engine: Engine, stream: _Stream) -> None:
        self._engine = engine
        self._stream = stream
        self.seed = stream.seed
        self.prompt_tokens = len(stream.seq.prompt_ids)
        # dropped without being closed (e.g. a response that never started): cancel anyway
        self._cancel = weakref.finalize(self, engine.cancel, stream.seq.seq_id)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        stream = self._stream
        if stream.finished:
            raise StopAsyncIteration
        try:
            event = await stream.queue.get()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(event, BaseException):
            stream.finished = True
            raise event
        if event.finish_reason is not None:
            stream.finished = True
        return event

    async def aclose(self) -> None:
        self._stream.finished = True
        self._cancel()  # once; a finished sequence is left as it is

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class Engine:
    def __init__(
        self,
        runner,
        tokenizer,
        config: SchedulerConfig,
        executor: Executor,
        *,
        special_ids: set[int] | None = None,
        name: str = "",
    ) -> None:
        """`runner`: has `step(cache, [StepInput]) -> logits` and `kv_shape`; `tokenizer`: a
        Rust `tokenizers.Tokenizer` (decode)."""
        self.runner = runner
        self._next_runner = None  # a backend to switch to between two steps (use_runner)
        self.tokenizer = tokenizer
        self.config = config
        self.executor = executor
        self.name = name
        self.special_ids = special_ids or set()
        self.scheduler = Scheduler(config)
        self.cache = KVCache(runner.kv_shape, config.num_slots, config.max_len)
        self._streams: dict[int, _Stream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.steps = 0  # forward passes run (metrics, tests)
        self.last_batch_size = 0
        # (batch size, tokens, seconds, running, waiting) after each step; set by the server
        self.observer = None

    # -- requests ----------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Admit a request now (raises InvalidInput / Overloaded at once); iterate the result
        for its events. Closing the iterator (or never finishing it) cancels the request."""
        return RequestStream(self, self._add(request))

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """`submit` + iterate; errors of admission surface at the first `__anext__`."""

        async def events() -> AsyncIterator[TokenEvent]:
            async with self.submit(request) as stream:
                async for event in stream:
                    yield event

        return events()

    def _add(self, request: GenerationRequest) -> _Stream:
        params = request.params
        if not self.scheduler.can_fit(len(request.prompt_ids), params.max_new_tokens):
            raise InvalidInput(
                f"the prompt ({len(request.prompt_ids)} tokens) plus max_new_tokens "
                f"({params.max_new_tokens}) does not fit this model's {self.config.max_len} "
                "positions",
                param="max_new_tokens",
            )
        try:
            seq = self.scheduler.add(request.prompt_ids, params)
        except OverflowError:
            raise Overloaded(
                "too many generation requests are queued; retry later", headers={"Retry-After": "1"}
            ) from None
        seed = params.seed
        if params.do_sample and seed is None:
            seed = random.getrandbits(63)
        stream = _Stream(
            seq=seq,
            queue=asyncio.Queue(),
            detok=Detokenizer(self.tokenizer, request.prompt_ids),
            stop=StopMatcher(params.stop, params.include_stop_in_output),
            generator=make_generator(seed) if params.do_sample else None,
            seed=seed,
        )
        self._streams[seq.seq_id] = stream
        self._ensure_loop()
        self._wake.set()
        return stream

    def cancel(self, seq_id: int) -> None:
        stream = self._streams.pop(seq_id, None)
        if stream is not None:
            stream.done = True
        self.scheduler.abort(seq_id)

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    # -- the step loop -----------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            self._task, self._wake = None, asyncio.Event()  # a new event loop (tests)
        if self._task is None or self._task.done():
            # an empty context: the loop must not log under the id of the request that woke it
            self._task = contextvars.Context().run(loop.create_task, self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for seq_id in list(self._streams):
            stream = self._streams[seq_id]
            stream.queue.put_nowait(ModelError("the model was unloaded"))
            self.cancel(seq_id)

    def use_runner(self, runner) -> None:
        """Switch backend (e.g. the compiled graph replacing the PyTorch reference) between
        two steps. The KV cache is the same memory for both, so running sequences go on."""
        if runner.kv_shape != self.runner.kv_shape:
            raise ValueError(f"KV layout {runner.kv_shape} differs from {self.runner.kv_shape}")
        self._next_runner = runner

    def _switch_runner(self) -> None:
        runner, self._next_runner = self._next_runner, None
        resume = getattr(runner, "resume", None)
        if resume is not None:  # what each occupied slot holds already
            resume({seq.slot: seq.num_computed for seq in self.scheduler.running})
        self.runner = runner

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._next_runner is not None:
                self._switch_runner()
            if not self.scheduler.has_work:
                self._wake.clear()
                await self._wake.wait()
                continue
            output = self.scheduler.schedule()
            if not output:  # pragma: no cover - has_work implies something to schedule
                await asyncio.sleep(0)
                continue
            try:
                await self._step(loop, output)
            except Exception:  # noqa: BLE001 - fail these requests, keep serving the others
                log.exception("generation step failed (%s)", self.name)
                for chunk in output.chunks:
                    stream = self._streams.get(chunk.seq.seq_id)
                    if stream is not None:
                        stream.queue.put_nowait(ModelError("the model failed while generating"))
                    self.cancel(chunk.seq.seq_id)

    async def _step(self, loop: asyncio.AbstractEventLoop, output: SchedulerOutput) -> None:
        rows = [(c.seq.seq_id, self._row(c.seq)) for c in output.chunks if c.sample]
        started = time.perf_counter()
        live = {seq.slot for seq in self.scheduler.running}
        sampled = await loop.run_in_executor(self.executor, self._compute, output, rows, live)
        self.steps += 1
        self.last_batch_size = len(output.chunks)
        seconds = time.perf_counter() - started
        tokens = {seq_id: tok for seq_id, (tok, _, _) in sampled.items()}
        for seq in self.scheduler.update_from_output(output, tokens):
            self._emit(seq, *sampled[seq.seq_id])
        if self.observer is not None:
            self.observer(
                len(output.chunks),
                output.num_tokens,
                seconds,
                self.scheduler.num_running,
                self.scheduler.num_waiting,
            )

    def _row(self, seq: Sequence) -> SampleRow:
        stream = self._streams.get(seq.seq_id)
        return SampleRow(
            seq.params,
            seq.token_ids if seq.params.needs_penalties else [],
            len(seq.prompt_ids),
            stream.generator if stream is not None else None,
        )

    def _compute(self, output: SchedulerOutput, rows: list[tuple[int, SampleRow]], live: set):
        """On the compute pool: the forward pass and the sampling."""
        retain = getattr(self.runner, "retain", None)
        if retain is not None:  # slots freed since the last step hold nothing worth keeping
            retain(live)
        items = [StepInput(c.seq.slot, c.start, c.tokens) for c in output.chunks]
        logits = self.runner.step(self.cache, items)
        if not rows:
            return {}
        picked = [i for i, c in enumerate(output.chunks) if c.sample]
        if len(picked) < len(output.chunks):  # a partial prefill chunk samples nothing
            logits = logits[picked]
        result = sample(logits, [row for _, row in rows])
        out = {}
        for j, (seq_id, _) in enumerate(rows):
            logprob = result.logprobs[j] if result.logprobs is not None else None
            out[seq_id] = (result.token_ids[j], logprob, result.top[j])
        return out

    def _emit(self, seq: Sequence, token: int, logprob: float | None, top) -> None:
        stream = self._streams.get(seq.seq_id)
        if stream is None:
            return
        params = seq.params
        text = stream.stop.feed(stream.detok.push(token))
        reason = None
        if stream.stop.stopped is None:
            if token in params.eos_token_ids and not params.ignore_eos:
                reason = "eos_token"
            elif seq.finish_reason is not None:
                reason = seq.finish_reason
            if reason is not None:
                text += stream.stop.feed(stream.detok.flush())
                text += stream.stop.flush()
        if stream.stop.stopped is not None:
            reason = "stop_sequence"
        stream.text.append(text)
        if reason is not None:
            self.scheduler.finish(seq.seq_id, reason)
            stream.done = True
            self._streams.pop(seq.seq_id, None)
        decode = self.tokenizer.decode
        event = TokenEvent(
            index=len(seq.output_ids),
            token_id=token,
            text=text,
            token_text=decode([token], skip_special_tokens=False),
            special=token in self.special_ids,
            logprob=logprob,
            top=[(t, decode([t], skip_special_tokens=False), lp) for t, lp in top],
            finish_reason=reason,
            generated_text="".join(stream.text) if reason is not None else None,
            prompt_tokens=len(seq.prompt_ids),
            seed=stream.seed,
        )
        stream.queue.put_nowait(event)
