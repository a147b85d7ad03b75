"""The scheduler: pure bookkeeping of which sequences run in the next step (no model, no torch).

vLLM's shape: `schedule()` -> the runner executes the returned chunks -> `update_from_output()`.

- A sequence is WAITING until it gets a KV slot (admission by KV memory: the cache has a fixed
  number of slots, each `max_len` positions long; a request that cannot fit `max_len` is refused
  at submit), then RUNNING until it finishes or is aborted; either frees its slot at once.
- Every step has a token budget (`max_batch_tokens`). Running decodes go first (one token each,
  so streams keep their pace), then prompts are prefilled in chunks of what budget is left
  (chunked prefill: a long prompt never stalls the running streams for more than one chunk).
- A chunk that reaches the end of a sequence's known tokens is sampled from; a partial prefill
  chunk is not.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from zesty.generation.types import SamplingParams


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose keys/values are in the cache
    slot: int | None = None
    status: Status = Status.WAITING
    finish_reason: str | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed < len(self.prompt_ids)


@dataclass
class Chunk:
    """Tokens of one sequence to run this step, at positions `start..start+len(tokens)-1`."""

    seq: Sequence
    start: int
    tokens: list[int]
    sample: bool  # the chunk ends at the sequence's last known token: sample the next one


@dataclass
class SchedulerOutput:
    chunks: list[Chunk]

    @property
    def num_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.chunks)

    def __bool__(self) -> bool:
        return bool(self.chunks)


@dataclass(frozen=True)
class SchedulerConfig:
    num_slots: int  # sequences that fit the KV cache at once
    max_len: int  # positions per slot (prompt + generated tokens)
    max_batch_tokens: int = 512  # tokens computed in one step (decodes + prefill chunks)
    max_waiting: int = 1024  # queued sequences beyond which submit is refused


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        if config.num_slots < 1 or config.max_len < 2 or config.max_batch_tokens < 1:
            raise ValueError(f"invalid scheduler config: {config}")
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        # a min-heap: the lowest free slot first, so running sequences stay packed at the
        # front of the cache (the compiled step runs over the prefix of slots in use)
        self.free_slots: list[int] = list(range(config.num_slots))
        self._ids = itertools.count()
        self._by_id: dict[int, Sequence] = {}

    # -- intake ------------------------------------------------------------------------------

    def can_fit(self, prompt_len: int, max_new_tokens: int) -> bool:
        return prompt_len >= 1 and prompt_len + max_new_tokens <= self.config.max_len

    def add(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """Queue a sequence. Raises ValueError if it can never fit a slot, OverflowError when
        the waiting queue is full (the caller answers 429)."""
        if not self.can_fit(len(prompt_ids), params.max_new_tokens):
            raise ValueError("the sequence does not fit one KV slot")
        if len(self.waiting) >= self.config.max_waiting:
            raise OverflowError("the waiting queue is full")
        seq = Sequence(next(self._ids), list(prompt_ids), params)
        self.waiting.append(seq)
        self._by_id[seq.seq_id] = seq
        return seq

    def abort(self, seq_id: int, reason: str = "cancelled") -> None:
        """Drop a sequence wherever it is; its slot is free for the next schedule()."""
        seq = self._by_id.get(seq_id)
        if seq is not None and seq.status is not Status.FINISHED:
            self._finish(seq, reason)

    # -- the step ----------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_batch_tokens
        chunks: list[Chunk] = []
        # 1. decodes of running sequences (one token each), oldest first
        for seq in self.running:
            if budget == 0:
                break
            if not seq.is_prefilling:
                chunks.append(Chunk(seq, seq.num_computed, seq.token_ids[seq.num_computed :], True))
                budget -= 1
        # 2. prefill chunks of admitted sequences, then admit new ones while slots and budget last
        for seq in self.running:
            if budget == 0:
                break
            if seq.is_prefilling:
                chunks.append(self._prefill_chunk(seq, budget))
                budget -= len(chunks[-1].tokens)
        while budget > 0 and self.waiting and self.free_slots:
            seq = self.waiting.popleft()
            seq.slot = heapq.heappop(self.free_slots)
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(self._prefill_chunk(seq, budget))
            budget -= len(chunks[-1].tokens)
        return SchedulerOutput(chunks)

    def _prefill_chunk(self, seq: Sequence, budget: int) -> Chunk:
        start = seq.num_computed
        tokens = seq.token_ids[start : start + budget]
        return Chunk(seq, start, tokens, start + len(tokens) == seq.num_tokens)

    def update_from_output(
        self, output: SchedulerOutput, sampled: dict[int, int]
    ) -> list[Sequence]:
        """Record a finished step: every chunk's tokens are now cached; `sampled` maps seq_id ->
        the new token for chunks with `sample`. Returns the sequences that got a token (aborted
        ones are skipped: their results are dropped)."""
        advanced = []
        for chunk in output.chunks:
            seq = chunk.seq
            if seq.status is not Status.RUNNING:
                continue
            seq.num_computed = chunk.start + len(chunk.tokens)
            if chunk.sample:
                seq.output_ids.append(sampled[seq.seq_id])
                advanced.append(seq)
                if len(seq.output_ids) >= seq.params.max_new_tokens:
                    self._finish(seq, "length")
                elif seq.num_tokens >= self.config.max_len:
                    self._finish(seq, "length")
        return advanced

    def finish(self, seq_id: int, reason: str) -> None:
        """End a sequence for a reason decided outside (EOS, stop sequence)."""
        seq = self._by_id.get(seq_id)
        if seq is not None and seq.status is not Status.FINISHED:
            self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
            assert seq.slot is not None
            heapq.heappush(self.free_slots, seq.slot)
        seq.status = Status.FINISHED
        if seq.finish_reason is None:
            seq.finish_reason = reason
        self._by_id.pop(seq.seq_id, None)

    # -- introspection -----------------------------------------------------------------------

    def get(self, seq_id: int) -> Sequence | None:
        return self._by_id.get(seq_id)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)
